//! Aggregates: the mergeable partial state every windowed query is built
//! from, and the per-minute rollups kept beside each block (and longer).

use super::points::Points;
use crate::domain::Timestamp;

/// One minute in nanoseconds: the rollup resolution.
pub const MINUTE_NS: i64 = 60_000_000_000;

/// The aggregates a query can ask for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Agg {
    /// Mean.
    Avg,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Sum.
    Sum,
    /// Number of samples.
    Count,
    /// Earliest value.
    First,
    /// Latest value.
    Last,
    /// Sample standard deviation.
    Stddev,
}

impl std::str::FromStr for Agg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "avg" | "mean" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "sum" => Agg::Sum,
            "count" => Agg::Count,
            "first" => Agg::First,
            "last" => Agg::Last,
            "stddev" => Agg::Stddev,
            other => {
                return Err(format!("unknown aggregate `{other}` (avg, min, max, sum, count, first, last, stddev)"))
            }
        })
    }
}

impl Agg {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Sum => "sum",
            Agg::Count => "count",
            Agg::First => "first",
            Agg::Last => "last",
            Agg::Stddev => "stddev",
        }
    }
}

/// Mergeable aggregate state over a set of samples: count, sum, the sum of
/// squared deviations from the mean (`m2`, Welford/Chan, numerically
/// stable), min, max, and first/last with their timestamps.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Partial {
    /// Number of samples.
    pub count: u64,
    /// Sum.
    pub sum: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Earliest value and its time.
    pub first: (Timestamp, f64),
    /// Latest value and its time.
    pub last: (Timestamp, f64),
}

impl Partial {
    /// The state of one sample.
    #[inline]
    pub fn one(ts: Timestamp, v: f64) -> Partial {
        Partial { count: 1, sum: v, m2: 0.0, min: v, max: v, first: (ts, v), last: (ts, v) }
    }

    /// Adds one sample (Welford).
    #[inline]
    pub fn add(&mut self, ts: Timestamp, v: f64) {
        let n0 = self.count as f64;
        let mean0 = self.sum / n0;
        self.count += 1;
        self.sum += v;
        let mean1 = self.sum / self.count as f64;
        self.m2 += (v - mean0) * (v - mean1);
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        if ts < self.first.0 {
            self.first = (ts, v);
        }
        if ts >= self.last.0 {
            self.last = (ts, v);
        }
    }

    /// Combines two partial states (Chan et al.).
    pub fn merge(&mut self, o: &Partial) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        let na = self.count as f64;
        let nb = o.count as f64;
        let delta = o.sum / nb - self.sum / na;
        self.m2 += o.m2 + delta * delta * na * nb / (na + nb);
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.first.0 < self.first.0 {
            self.first = o.first;
        }
        if o.last.0 >= self.last.0 {
            self.last = o.last;
        }
    }

    /// The value of one aggregate.
    pub fn value(&self, agg: Agg) -> Option<f64> {
        if self.count == 0 {
            return if agg == Agg::Count { Some(0.0) } else { None };
        }
        Some(match agg {
            Agg::Avg => self.sum / self.count as f64,
            Agg::Min => self.min,
            Agg::Max => self.max,
            Agg::Sum => self.sum,
            Agg::Count => self.count as f64,
            Agg::First => self.first.1,
            Agg::Last => self.last.1,
            Agg::Stddev => {
                if self.count < 2 {
                    0.0
                } else {
                    (self.m2 / (self.count - 1) as f64).max(0.0).sqrt()
                }
            }
        })
    }
}

/// Per-window partial states of one series, keyed by window start.
pub type Windows = std::collections::BTreeMap<Timestamp, Partial>;

/// Start of the window of length `window` that holds `ts` (windows are aligned to the epoch).
#[inline]
pub fn window_start(ts: Timestamp, window: i64) -> Timestamp {
    ts.div_euclid(window) * window
}

/// Folds the numeric samples of `p` with `from <= ts < to` into per-window partials.
/// Bad-quality samples are left out of aggregates (they are not measurements).
pub fn fold_points(p: &Points, from: Timestamp, to: Timestamp, window: i64, out: &mut Windows) {
    let mut cur: Option<(Timestamp, Partial)> = None;
    for i in 0..p.len() {
        let ts = p.ts[i];
        if ts < from || ts >= to {
            continue;
        }
        if p.quality_at(i).class() == crate::domain::QualityClass::Bad {
            continue;
        }
        let Some(v) = p.values.num(i) else { return };
        if v.is_nan() {
            continue;
        }
        let w = window_start(ts, window);
        match &mut cur {
            Some((cw, part)) if *cw == w => part.add(ts, v),
            _ => {
                if let Some((cw, part)) = cur.take() {
                    out.entry(cw).or_insert(Partial { count: 0, ..part }).merge(&part);
                }
                cur = Some((w, Partial::one(ts, v)));
            }
        }
    }
    if let Some((cw, part)) = cur {
        out.entry(cw).or_insert(Partial { count: 0, ..part }).merge(&part);
    }
}

/// Per-minute rollup rows of one series, as columns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RollupRows {
    /// Minute starts.
    pub minute: Vec<Timestamp>,
    /// Partial state of each minute.
    pub parts: Vec<Partial>,
}

impl RollupRows {
    /// Rolls `p` (normalized) up per minute.
    pub fn from_points(p: &Points) -> RollupRows {
        let mut w = Windows::new();
        fold_points(p, i64::MIN, i64::MAX, MINUTE_NS, &mut w);
        let mut r = RollupRows::default();
        for (m, part) in w {
            r.minute.push(m);
            r.parts.push(part);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Quality, Value, ValueKind};

    #[test]
    fn merged_partials_equal_one_pass() {
        let vals: Vec<f64> = (0..1000).map(|i| 1e6 + ((i * 37) % 101) as f64 * 0.01).collect();
        let mut whole = Partial::one(0, vals[0]);
        for (i, v) in vals.iter().enumerate().skip(1) {
            whole.add(i as i64, *v);
        }
        let mut a = Partial::one(0, vals[0]);
        for (i, v) in vals.iter().enumerate().take(400).skip(1) {
            a.add(i as i64, *v);
        }
        let mut b = Partial::one(400, vals[400]);
        for (i, v) in vals.iter().enumerate().skip(401) {
            b.add(i as i64, *v);
        }
        b.merge(&a); // order must not matter for first/last
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (vals.len() - 1) as f64;
        for agg in [Agg::Avg, Agg::Min, Agg::Max, Agg::Sum, Agg::Count, Agg::First, Agg::Last] {
            let (x, y) = (whole.value(agg).unwrap(), b.value(agg).unwrap());
            assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{agg:?}: {x} vs {y}");
        }
        assert!((b.value(Agg::Stddev).unwrap() - var.sqrt()).abs() < 1e-9);
        assert_eq!(b.value(Agg::First), Some(vals[0]));
        assert_eq!(b.value(Agg::Last), Some(vals[999]));
    }

    #[test]
    fn minute_rollups_skip_bad_samples() {
        let mut p = Points::new(ValueKind::F64);
        for s in 0..180 {
            let q = if s == 5 { Quality::BAD_COMMS } else { Quality::GOOD };
            p.push(s * 1_000_000_000, &Value::F64(s as f64), q);
        }
        let r = RollupRows::from_points(&p);
        assert_eq!(r.minute, vec![0, MINUTE_NS, 2 * MINUTE_NS]);
        assert_eq!(r.parts[0].count, 59);
        assert_eq!(r.parts[1].first.1, 60.0);
        assert_eq!(r.parts[2].last.1, 179.0);
        assert_eq!(window_start(-1, MINUTE_NS), -MINUTE_NS);
    }
}
