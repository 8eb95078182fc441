//! OEE, downtime by cause, MTBF and MTTR over a shift or any window, computed from
//! the store by replaying the stored samples through the same [`LineState`] tracker
//! the daemon runs live.
//!
//! Definitions (standard, ISO 22400 / Nakajima), per asset and over the window:
//! - planned production time = the window's shift time less breaks and planned stops
//!   (the whole window when no `[[shift]]` is configured);
//! - run time = time in `running` within planned production time;
//! - availability = run time / planned production time;
//! - performance = (total count / ideal rate) / run time, i.e. ideal cycle time ×
//!   total count / run time;
//! - quality = good count / total count; OEE = availability × performance × quality;
//! - downtime = planned production time not running, by cause: `fault_<code>`,
//!   `starved`, `blocked`, `setup`, `idle`, `unknown` (no data), with the number of stops;
//! - failures = fault periods that begin in planned production time (a new fault code
//!   is a new failure); MTBF = run time / failures; MTTR = fault time / failures.
//!
//! Counts are counter deltas between consecutive good samples whose later sample falls
//! in planned production time; a counter that drops has been reset (counts again from
//! 0) or, with `rollover`, wrapped. The line's figures are its key machine's.

use std::collections::BTreeMap;

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::state::{cause, LineState, StateChange};
use crate::config::calendar::{contains, overlap};
use crate::config::{AssetConfig, Calendar, CalendarError, Config};
use crate::domain::{MachineState, QualityClass, Sample, SeriesId, SeriesKey, Timestamp};
use crate::store::points::Points;
use crate::store::{Store, StoreError};

const NS: f64 = 1e9;

/// Why an OEE or downtime figure could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum OeeError {
    /// The calendar could not answer (bad shift label, unknown shift, bad time ...).
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such asset, or it has neither `state` nor `counters`.
    #[error("asset `{0}` is not configured with `state` or `counters`")]
    UnknownAsset(String),
    /// The window is empty.
    #[error("the window is empty: `from` must be before `to`")]
    EmptyWindow,
}

/// The window a report covers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// The shift label (`2026-11-28/A`), for a shift.
    pub shift: Option<String>,
    /// Start, UTC ns.
    pub from: Timestamp,
    /// End (exclusive), UTC ns.
    pub to: Timestamp,
    /// Start in the plant's local time.
    pub from_local: String,
    /// End in the plant's local time.
    pub to_local: String,
    /// The plant's time zone.
    pub time_zone: String,
    /// Planned production time in the window, s.
    pub planned_s: f64,
}

/// Downtime of one cause.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CauseDowntime {
    /// `fault_101`, `starved`, `blocked`, `setup`, `idle`, `unknown`.
    pub cause: String,
    /// Seconds within planned production time.
    pub seconds: f64,
    /// Stops of this cause (periods overlapping planned production time).
    pub stops: u32,
}

/// One stop: a period not running within planned production time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    /// The cause.
    pub cause: String,
    /// The state.
    pub state: MachineState,
    /// Start (clipped to the window), UTC ns.
    pub from: Timestamp,
    /// End (clipped to the window), UTC ns.
    pub to: Timestamp,
    /// Seconds within planned production time.
    pub seconds: f64,
}

/// OEE and its parts for one asset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssetOee {
    /// The `[[asset]]` id.
    pub asset: String,
    /// Planned production time, s.
    pub planned_s: f64,
    /// Time running within planned production time, s.
    pub run_s: f64,
    /// Seconds in each state within planned production time.
    pub state_s: BTreeMap<MachineState, f64>,
    /// Planned production time not running, s.
    pub downtime_s: f64,
    /// Downtime by cause, longest first.
    pub downtime: Vec<CauseDowntime>,
    /// Good count (None without a good or total + reject counter).
    pub good: Option<u64>,
    /// Reject count.
    pub reject: Option<u64>,
    /// Total count.
    pub total: Option<u64>,
    /// Ideal rate, units per minute (from config).
    pub ideal_rate_per_min: Option<f64>,
    /// Run time / planned production time.
    pub availability: Option<f64>,
    /// Ideal cycle time × total count / run time.
    pub performance: Option<f64>,
    /// Good / total.
    pub quality: Option<f64>,
    /// Availability × performance × quality.
    pub oee: Option<f64>,
    /// Fault periods that began in planned production time.
    pub failures: u32,
    /// Run time / failures, s.
    pub mtbf_s: Option<f64>,
    /// Fault time / failures, s.
    pub mttr_s: Option<f64>,
}

/// A line's OEE: its key machine's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineOee {
    /// The `[[line]]` id.
    pub line: String,
    /// The key machine whose figures these are.
    pub key_asset: String,
    /// Its figures.
    pub oee: AssetOee,
}

/// OEE of every configured asset and line over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OeeReport {
    /// The window.
    pub window: Window,
    /// Per line.
    pub lines: Vec<LineOee>,
    /// Per asset, in config order.
    pub assets: Vec<AssetOee>,
}

/// Downtime of one asset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssetDowntime {
    /// The `[[asset]]` id.
    pub asset: String,
    /// Planned production time, s.
    pub planned_s: f64,
    /// Downtime, s.
    pub downtime_s: f64,
    /// By cause, longest first.
    pub causes: Vec<CauseDowntime>,
    /// Fault periods that began in planned production time.
    pub failures: u32,
    /// Run time / failures, s.
    pub mtbf_s: Option<f64>,
    /// Fault time / failures, s.
    pub mttr_s: Option<f64>,
    /// Every stop, in time order.
    pub stops: Vec<Stop>,
}

/// Downtime of the tracked assets over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DowntimeReport {
    /// The window.
    pub window: Window,
    /// Per asset, in config order.
    pub assets: Vec<AssetDowntime>,
}

/// A counter's increments: resets and wraps are taken into account.
#[derive(Clone, Debug, Default)]
pub struct Counter {
    last: Option<f64>,
    rollover: Option<u64>,
}

impl Counter {
    /// A counter that wraps at `rollover` (its modulus), or only resets when None.
    pub fn new(rollover: Option<u64>) -> Counter {
        Counter { last: None, rollover }
    }

    /// Takes a reading; returns the units counted since the previous reading (0 for
    /// the first). A drop is a wrap when a rollover is configured and the old value
    /// was in its upper half, else a reset to 0.
    pub fn update(&mut self, value: f64) -> u64 {
        if !value.is_finite() || value < 0.0 {
            return 0;
        }
        let delta = match self.last {
            None => 0.0,
            Some(prev) if value >= prev => value - prev,
            Some(prev) => match self.rollover {
                Some(m) if prev >= m as f64 / 2.0 => (m as f64 - prev) + value,
                _ => value,
            },
        };
        self.last = Some(value);
        delta.round() as u64
    }
}

/// OEE of shift `label` (`2026-11-28/A`).
pub fn shift_oee(store: &Store, config: &Config, calendar: &Calendar, label: &str) -> Result<OeeReport, OeeError> {
    let w = calendar.shift(label)?;
    window_oee(store, config, calendar, w.start, w.end, Some(w.label))
}

/// OEE over [from, to).
pub fn window_oee(
    store: &Store,
    config: &Config,
    calendar: &Calendar,
    from: Timestamp,
    to: Timestamp,
    shift: Option<String>,
) -> Result<OeeReport, OeeError> {
    let to = known_end(store, config, from, to);
    let (window, planned) = window(calendar, from, to, shift)?;
    let states = replay_states(store, config, from, to)?;
    let mut assets = Vec::new();
    for a in config.assets.iter().filter(|a| a.state.is_some() || a.counters.is_some()) {
        let timeline = states.get(&a.id).map(Vec::as_slice).unwrap_or(&[]);
        let d = downtime_of(&a.id, timeline, &planned, from, to);
        let counts = counts(store, a, &planned, from, to)?;
        assets.push(asset_oee(a, d, counts, a.state.is_some()));
    }
    let lines = config
        .lines
        .iter()
        .filter_map(|l| {
            let key = l.key_asset.clone().or_else(|| {
                config
                    .assets
                    .iter()
                    .filter(|a| a.line == l.id && a.state.is_some() && a.counters.is_some())
                    .filter_map(|a| a.ideal_rate_per_min.map(|r| (r, &a.id)))
                    .min_by(|x, y| x.0.total_cmp(&y.0))
                    .map(|(_, id)| id.clone())
            })?;
            let oee = assets.iter().find(|o| o.asset == key)?.clone();
            Some(LineOee { line: l.id.clone(), key_asset: key, oee })
        })
        .collect();
    Ok(OeeReport { window, lines, assets })
}

/// Downtime by cause over [from, to), of one asset or every asset with `state`.
pub fn downtime(
    store: &Store,
    config: &Config,
    calendar: &Calendar,
    from: Timestamp,
    to: Timestamp,
    asset: Option<&str>,
) -> Result<DowntimeReport, OeeError> {
    if let Some(a) = asset {
        if config.asset(a).is_none_or(|c| c.state.is_none()) {
            return Err(OeeError::UnknownAsset(a.to_string()));
        }
    }
    let to = known_end(store, config, from, to);
    let (window, planned) = window(calendar, from, to, None)?;
    let states = replay_states(store, config, from, to)?;
    let assets = config
        .assets
        .iter()
        .filter(|a| a.state.is_some() && asset.is_none_or(|x| x == a.id))
        .map(|a| {
            let timeline = states.get(&a.id).map(Vec::as_slice).unwrap_or(&[]);
            downtime_of(&a.id, timeline, &planned, from, to).downtime
        })
        .collect();
    Ok(DowntimeReport { window, assets })
}

fn window(
    calendar: &Calendar,
    from: Timestamp,
    to: Timestamp,
    shift: Option<String>,
) -> Result<(Window, Vec<(Timestamp, Timestamp)>), OeeError> {
    if from >= to {
        return Err(OeeError::EmptyWindow);
    }
    let planned = calendar.planned(from, to)?;
    let planned_s = planned.iter().map(|(s, e)| (e - s) as f64 / NS).sum();
    let window = Window {
        shift,
        from,
        to,
        from_local: calendar.ts_to_local(from).to_string(),
        to_local: calendar.ts_to_local(to).to_string(),
        time_zone: calendar.time_zone_name().to_string(),
        planned_s,
    };
    Ok((window, planned))
}

/// The end of what is known of [from, to): `to` for a window in the past; for one
/// still running (a shift in progress), the later of the clock and the newest
/// sample of the configured tags, so the last state is not stretched into the future.
fn known_end(store: &Store, config: &Config, from: Timestamp, to: Timestamp) -> Timestamp {
    let now = crate::domain::now_ns();
    if to <= now {
        return to;
    }
    let ids: Vec<SeriesId> = config.tags.iter().filter_map(|t| series_id(store, &t.name)).collect();
    let newest = store.latest(&ids).into_iter().flatten().map(|l| l.ts).max().unwrap_or(now);
    to.min(now.max(newest)).max(from.saturating_add(1))
}

fn series_id(store: &Store, name: &str) -> Option<SeriesId> {
    store.catalog().lookup(&SeriesKey::new(name)).map(|(id, _)| id)
}

/// The last sample of `id` before `t` (looking back up to 8 days), as points.
fn last_before(store: &Store, id: SeriesId, t: Timestamp) -> Result<Option<Points>, StoreError> {
    let mut back = 60 * 1_000_000_000i64;
    while back <= 8 * 86_400 * 1_000_000_000 {
        let p = store.range(id, t.saturating_sub(back), t)?;
        if !p.is_empty() {
            return Ok(Some(p.range(p.ts[p.len() - 1], t)));
        }
        back *= 4;
    }
    Ok(None)
}

/// Each input series' last sample before `from` and its samples in [from, to), merged in
/// time order.
fn samples(store: &Store, ids: &[SeriesId], from: Timestamp, to: Timestamp) -> Result<Vec<Sample>, StoreError> {
    let mut out = Vec::new();
    for &id in ids {
        let mut parts = Vec::new();
        parts.extend(last_before(store, id, from)?);
        parts.push(store.range(id, from, to)?);
        for p in parts {
            for i in 0..p.len() {
                out.push(Sample { series: id, ts: p.ts[i], value: p.values.get(i), quality: p.quality_at(i) });
            }
        }
    }
    out.sort_by_key(|s| s.ts);
    Ok(out)
}

/// Every tracked asset's state changes from the last known state before `from` to `to`.
fn replay_states(
    store: &Store,
    config: &Config,
    from: Timestamp,
    to: Timestamp,
) -> Result<BTreeMap<String, Vec<StateChange>>, StoreError> {
    let mut tracker = LineState::new(config, |name| series_id(store, name));
    let mut out: BTreeMap<String, Vec<StateChange>> = BTreeMap::new();
    for s in samples(store, &tracker.series(), from, to)? {
        for c in tracker.observe(&s) {
            out.entry(c.asset.clone()).or_default().push(c);
        }
    }
    for c in tracker.flush() {
        out.entry(c.asset.clone()).or_default().push(c);
    }
    Ok(out)
}

/// Time per state, downtime by cause, stops and failures of one asset's timeline.
fn downtime_of(
    asset: &str,
    changes: &[StateChange],
    planned: &[(Timestamp, Timestamp)],
    from: Timestamp,
    to: Timestamp,
) -> Timed {
    // The timeline as (start, state, fault code): unknown until the first change.
    let mut timeline: Vec<(Timestamp, MachineState, Option<i64>)> = vec![(i64::MIN, MachineState::Unknown, None)];
    timeline.extend(changes.iter().map(|c| (c.ts, c.state, c.fault_code)));
    let mut state_s: BTreeMap<MachineState, f64> = BTreeMap::new();
    let mut causes: BTreeMap<String, (f64, u32)> = BTreeMap::new();
    let mut stops = Vec::new();
    let mut failures = 0u32;
    let mut run_s = 0.0;
    let mut fault_s = 0.0;
    for (i, &(start, state, code)) in timeline.iter().enumerate() {
        let end = timeline.get(i + 1).map_or(to, |n| n.0);
        let (s, e) = (start.max(from), end.min(to));
        if s >= e {
            continue;
        }
        let secs = overlap(planned, s, e) as f64 / NS;
        if secs <= 0.0 {
            continue;
        }
        *state_s.entry(state).or_default() += secs;
        match cause(state, code) {
            None => run_s += secs,
            Some(c) => {
                let entry = causes.entry(c.clone()).or_default();
                entry.0 += secs;
                entry.1 += 1;
                stops.push(Stop { cause: c, state, from: s, to: e, seconds: secs });
                if state == MachineState::Fault {
                    fault_s += secs;
                    if start >= from && contains(planned, start) {
                        failures += 1;
                    }
                }
            }
        }
    }
    let mut causes: Vec<CauseDowntime> =
        causes.into_iter().map(|(cause, (seconds, stops))| CauseDowntime { cause, seconds, stops }).collect();
    causes.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let planned_s: f64 = planned.iter().map(|(s, e)| (e - s) as f64 / NS).sum();
    let per_failure = |x: f64| (failures > 0).then(|| x / failures as f64);
    let d = AssetDowntime {
        asset: asset.to_string(),
        planned_s,
        downtime_s: causes.iter().map(|c| c.seconds).sum(),
        causes,
        failures,
        mtbf_s: per_failure(run_s),
        mttr_s: per_failure(fault_s),
        stops,
    };
    Timed { downtime: d, state_s, run_s }
}

/// An asset's timeline over a window, summed: its downtime and its time per state.
struct Timed {
    downtime: AssetDowntime,
    state_s: BTreeMap<MachineState, f64>,
    run_s: f64,
}

/// Good, reject and total counts in planned production time.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    good: Option<u64>,
    reject: Option<u64>,
    total: Option<u64>,
}

fn counter_sum(
    store: &Store,
    tag: &str,
    rollover: Option<u64>,
    planned: &[(Timestamp, Timestamp)],
    from: Timestamp,
    to: Timestamp,
) -> Result<u64, StoreError> {
    let Some(id) = series_id(store, tag) else { return Ok(0) };
    let mut counter = Counter::new(rollover);
    let mut sum = 0u64;
    let mut parts = Vec::new();
    parts.extend(last_before(store, id, from.saturating_add(1))?);
    parts.push(store.range(id, from.saturating_add(1), to.saturating_add(1))?);
    for p in parts {
        for i in 0..p.len() {
            if p.quality_at(i).class() == QualityClass::Bad {
                continue;
            }
            let Some(v) = p.values.num(i) else { continue };
            let d = counter.update(v);
            // A delta covers the time since the previous reading: it is counted where it ends.
            let t = p.ts[i];
            if t > from && t <= to && (contains(planned, t) || contains(planned, t - 1)) {
                sum += d;
            }
        }
    }
    Ok(sum)
}

fn counts(
    store: &Store,
    a: &AssetConfig,
    planned: &[(Timestamp, Timestamp)],
    from: Timestamp,
    to: Timestamp,
) -> Result<Counts, StoreError> {
    let Some(c) = &a.counters else { return Ok(Counts::default()) };
    let read = |t: &Option<String>| -> Result<Option<u64>, StoreError> {
        t.as_deref().map(|t| counter_sum(store, t, c.rollover, planned, from, to)).transpose()
    };
    let (good, reject, total) = (read(&c.good)?, read(&c.reject)?, read(&c.total)?);
    Ok(match (good, reject, total) {
        (Some(g), Some(r), None) => Counts { good: Some(g), reject: Some(r), total: Some(g + r) },
        (None, Some(r), Some(t)) => Counts { good: Some(t.saturating_sub(r)), reject: Some(r), total: Some(t) },
        (Some(g), None, Some(t)) => Counts { good: Some(g), reject: Some(t.saturating_sub(g)), total: Some(t) },
        (Some(g), None, None) => Counts { good: Some(g), reject: None, total: Some(g) },
        (None, None, Some(t)) => Counts { good: None, reject: None, total: Some(t) },
        (g, r, t) => Counts { good: g, reject: r, total: t },
    })
}

fn asset_oee(a: &AssetConfig, t: Timed, counts: Counts, has_state: bool) -> AssetOee {
    let Timed { downtime: d, state_s, run_s } = t;
    let ratio = |num: f64, den: f64| (den > 0.0).then(|| num / den);
    let availability = if has_state { ratio(run_s, d.planned_s) } else { None };
    // Units per second at the ideal rate.
    let performance = match (a.ideal_rate_per_min, counts.total, has_state) {
        (Some(r), Some(t), true) => ratio(t as f64 / (r / 60.0), run_s),
        _ => None,
    };
    // Quality needs to know both good and total (a lone good counter says nothing of rejects).
    let quality = match (counts.good, counts.total, counts.reject.is_some()) {
        (Some(g), Some(t), true) => ratio(g as f64, t as f64),
        _ => None,
    };
    let oee = match (availability, performance, quality) {
        (Some(x), Some(y), Some(z)) => Some(x * y * z),
        _ => None,
    };
    AssetOee {
        asset: a.id.clone(),
        planned_s: d.planned_s,
        run_s,
        state_s,
        downtime_s: d.downtime_s,
        downtime: d.causes,
        good: counts.good,
        reject: counts.reject,
        total: counts.total,
        ideal_rate_per_min: a.ideal_rate_per_min,
        availability,
        performance,
        quality,
        oee,
        failures: d.failures,
        mtbf_s: d.mtbf_s,
        mttr_s: d.mttr_s,
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

fn count(x: Option<u64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn dur(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_string(), |s| super::state::human_duration((s * 1e9) as i64))
}

fn window_line(w: &Window) -> String {
    format!(
        "{}{} .. {} ({}), planned production time {}\n",
        w.shift.as_ref().map(|s| format!("shift {s}: ")).unwrap_or_default(),
        w.from_local,
        w.to_local,
        w.time_zone,
        dur(Some(w.planned_s))
    )
}

/// An OEE report as a text table: one row per line and asset, then downtime by cause.
pub fn oee_table(r: &OeeReport) -> String {
    let mut s = window_line(&r.window);
    let _ = writeln!(
        s,
        "\n{:<16} {:>7} {:>7} {:>7} {:>7} {:>9} {:>8} {:>9} {:>11} {:>5} {:>10} {:>10}",
        "", "OEE", "avail", "perf", "quality", "good", "reject", "run", "downtime", "fail", "MTBF", "MTTR"
    );
    let row = |s: &mut String, name: &str, o: &AssetOee| {
        let _ = writeln!(
            s,
            "{:<16} {:>7} {:>7} {:>7} {:>7} {:>9} {:>8} {:>9} {:>11} {:>5} {:>10} {:>10}",
            name,
            pct(o.oee),
            pct(o.availability),
            pct(o.performance),
            pct(o.quality),
            count(o.good),
            count(o.reject),
            dur(Some(o.run_s)),
            dur(Some(o.downtime_s)),
            o.failures,
            dur(o.mtbf_s),
            dur(o.mttr_s)
        );
    };
    for l in &r.lines {
        row(&mut s, &format!("{} ({})", l.line, l.key_asset), &l.oee);
    }
    for a in &r.assets {
        row(&mut s, &a.asset, a);
    }
    s.push_str("\nDowntime by cause (stops)\n");
    for a in &r.assets {
        let causes: Vec<String> =
            a.downtime.iter().map(|c| format!("{} {} ({})", c.cause, dur(Some(c.seconds)), c.stops)).collect();
        let _ = writeln!(s, "{:<16} {}", a.asset, if causes.is_empty() { "-".to_string() } else { causes.join(", ") });
    }
    s
}

/// A downtime report as text: per asset the causes, then its ten longest stops.
pub fn downtime_table(r: &DowntimeReport, cal: Option<&Calendar>) -> String {
    let mut s = window_line(&r.window);
    for a in &r.assets {
        let _ = writeln!(
            s,
            "\n{}: downtime {} of {} planned, {} failures, MTBF {}, MTTR {}",
            a.asset,
            dur(Some(a.downtime_s)),
            dur(Some(a.planned_s)),
            a.failures,
            dur(a.mtbf_s),
            dur(a.mttr_s)
        );
        let _ = writeln!(s, "  {:<16} {:>12} {:>6}", "cause", "duration", "stops");
        for c in &a.causes {
            let _ = writeln!(s, "  {:<16} {:>12} {:>6}", c.cause, dur(Some(c.seconds)), c.stops);
        }
        let mut longest: Vec<&Stop> = a.stops.iter().collect();
        longest.sort_by(|x, y| y.seconds.total_cmp(&x.seconds));
        if !longest.is_empty() {
            let _ = writeln!(s, "  longest stops:");
        }
        for st in longest.iter().take(10) {
            let at = match cal {
                Some(c) => c.ts_to_local(st.from).to_string(),
                None => crate::api::query::format_time(st.from),
            };
            let _ = writeln!(s, "    {at:<29} {:>12}  {}", dur(Some(st.seconds)), st.cause);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_resets_and_wraps() {
        let mut c = Counter::new(None);
        let deltas: Vec<u64> = [100.0, 150.0, 150.0, 20.0, 30.0].iter().map(|&v| c.update(v)).collect();
        assert_eq!(deltas, [0, 50, 0, 20, 10]);
        let mut c = Counter::new(Some(1 << 32));
        let top = (1u64 << 32) as f64;
        let deltas: Vec<u64> = [top - 10.0, top - 1.0, 5.0, 1_000.0, 3.0].iter().map(|&v| c.update(v)).collect();
        // A drop from the top half wraps (1 + 5 = 6 units after 2^32 - 1); from the bottom half it resets.
        assert_eq!(deltas, [0, 9, 6, 995, 3]);
        assert_eq!(c.update(f64::NAN), 0);
    }

    #[test]
    fn timeline_is_clipped_to_planned_time() {
        let ch = |ts, state, code| StateChange {
            asset: "m".into(),
            ts,
            state,
            fault_code: code,
            previous: None,
            previous_fault_code: None,
            previous_since: None,
        };
        use MachineState::*;
        let s = 1_000_000_000i64;
        // Unknown until 10 s, running, a fault from 50 to 70 s (across the planned gap 60-80 s), running.
        let changes = [ch(10 * s, Running, None), ch(50 * s, Fault, Some(7)), ch(70 * s, Running, None)];
        let planned = [(0, 60 * s), (80 * s, 100 * s)];
        let t = downtime_of("m", &changes, &planned, 0, 100 * s);
        assert_eq!(t.run_s, 40.0 + 20.0);
        assert_eq!(t.state_s[&Unknown], 10.0);
        assert_eq!(t.downtime.causes[0], CauseDowntime { cause: "fault_7".into(), seconds: 10.0, stops: 1 });
        assert_eq!((t.downtime.failures, t.downtime.mttr_s, t.downtime.mtbf_s), (1, Some(10.0), Some(60.0)));
        assert_eq!(t.downtime.planned_s, 80.0);
        assert_eq!(t.downtime.downtime_s, 20.0);
    }
}
