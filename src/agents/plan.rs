//! The maintenance planner: per asset health indicators, remaining useful life with
//! an uncertainty band, and a ranked list of work orders, from the store and the
//! maintenance manual in the configuration (`[[asset_kind]]`).
//!
//! # Health indicators
//! For every failure mode of an asset's kind, its tags are read over the look-back
//! window (default 2 h). Condition signals such as bearing vibration depend on how
//! fast the machine runs, so only samples **at steady full speed** count: the asset's
//! state says running and its speed is at least 90 % of the window's full speed (the
//! 90th percentile of its running speed). An asset without a state or speed tag
//! uses every sample.
//! - **Level**: the median of the last 15 minutes of such samples.
//! - **Trend**: least squares of `ln(value)` on time and, when the asset has a
//!   speed tag, on `z = ln(speed / full speed)`: an exponential degradation model
//!   (the usual shape of bearing wear) with speed as an operating-condition
//!   covariate, so a healthy bearing whose machine slows down within the window is
//!   not read as wear; the trend is projected at full speed (`z = 0`). It gives the
//!   growth in % per hour and the slope in the tag's unit per hour now.
//! - **Remaining useful life** (the first tag of a mode with a `failure_limit`): the
//!   time the trend reaches the limit, with a **10-90 % band**:
//!   - *exponential* (`ln y` linear in time): Fieller's interval for the crossing
//!     time, i.e. where the fitted line's 80 % confidence band crosses the limit
//!     (the early end from the upper band; the late end from the lower band,
//!     unbounded when the growth is not significantly positive);
//!   - *accelerating exponential* (`ln y` quadratic in time), used instead when the
//!     exponential's growth and the quadratic's curvature are both significantly
//!     positive (one-sided, at the band's 90 % quantile) and its crossing lies
//!     within one look-back window (a curvature is not extrapolated further than it
//!     was observed): its crossing, with a delta-method band (the fitted value's
//!     standard error at the crossing over the slope there), widened to reach the
//!     exponential's late end, since the true shape lies between an exponential
//!     (too slow for wear that accelerates) and an extrapolated quadratic.
//!
//!   Wear residuals are autocorrelated (a curving trend makes them more so), so the
//!   coefficients' covariance is inflated by `(1 + r) / (1 - r)`, `r` the lag-1
//!   autocorrelation of the residuals (an AR(1) effective sample size), and the
//!   quantiles are Student's t with the effective degrees of freedom. The band
//!   measures how well the data pin the model down, not every way its shape can be
//!   wrong: on the demo's bearing it holds the true failure time from 1.5 h before
//!   it, not earlier (figures in docs/EVALUATION.md, `linepilot eval plan`).
//! - **Margin to the alarm limits**: for every tag of a mode with alarm limits
//!   (from the tag's resolved alarm settings), `h` minus the level; temperatures are
//!   reported as temperature margins.
//! - **Run hours and cycles against service intervals**: the kind's `hours_tag` and
//!   the asset's good + reject counters (their readings, so a counter reset restarts
//!   the count). A task recorded done ([`record_done`], `linepilot maintenance
//!   done`: an `audit` event with the readings then) is due one interval after that
//!   reading; without a history it is assumed done on schedule, so it is next due at
//!   the next multiple of its interval (each task says which rule it follows). The
//!   wall time until then follows from the asset's usage (run hours or cycles per
//!   hour) over the last 24 h. A recorded repair of a failure mode restarts its
//!   trends at the repair.
//!
//! # Work orders
//! - a failure mode whose RUL lower band ends within the horizon (default 7 days)
//!   and whose trend rose significantly over the look-back window — by at least a
//!   quarter of the tag's alert limit `h` (ISO 10816-3 counts a change of 25 % of the
//!   zone B/C boundary as significant), or of the failure limit without `h`: repair
//!   before the lower band (high priority under 24 h, else medium). Without the
//!   material-rise rule a growth of 1 % per hour, extrapolated a hundred windows
//!   ahead, flags healthy bearings;
//! - otherwise, a failure mode with a tag outside an alarm limit now (or alarms and
//!   anomalies on its tags in the event log over the window): inspect now (high
//!   priority beyond `hh`/`ll`, medium beyond `h`/`l`, low for logged events only);
//! - a service task due within the horizon (low priority).
//!
//! They are ranked by due time, then priority. Every number of a work order's `why`
//! text is in the plan's facts ([`Plan::facts`], the plan without the texts), so the
//! reviewer can check it. [`Plan::open_items`] lists them for the shift report.

use serde::Serialize;
use serde_json::{json, Value as Json};
use tracing::debug;

use super::tools::{round, ToolContext, ToolError, ToolOutput};
use crate::config::knowledge::{tag_matches, AssetKindConfig, FailureModeConfig};
use crate::config::{AssetConfig, TagConfig};
use crate::domain::{EventKind, MachineState, Timestamp};
use crate::store::events::EventQuery;

const HOUR_NS: i64 = 3_600_000_000_000;
const MINUTE_NS: i64 = 60_000_000_000;
/// Minutes of steady samples the level is the median of.
const LEVEL_MINUTES: i64 = 15;
/// Usage (run hours, cycles per hour) is measured over this many hours.
const USAGE_HOURS: i64 = 24;
/// Steady full speed: at least this share of the window's full speed.
const FULL_SPEED_SHARE: f64 = 0.9;
/// Fewest steady samples a trend is fitted on.
const MIN_TREND_SAMPLES: usize = 20;
/// The band: 10 % and 90 % quantiles.
const BAND_PCT: [u32; 2] = [10, 90];
/// Under this many hours of lower band a condition work order is high priority.
const HIGH_PRIORITY_HOURS: f64 = 24.0;
/// A rise over the look-back window is significant from this share of the condition
/// tag's alert limit `h` (ISO 10816-3: a change of 25 % of the zone B/C boundary is
/// significant), or of the failure limit when the tag has no `h`.
const SIGNIFICANT_CHANGE_SHARE: f64 = 0.25;

/// What the planner looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOptions {
    /// Hours of history the trends are fitted on.
    pub lookback_hours: f64,
    /// Work orders due within this many hours are listed.
    pub horizon_hours: f64,
    /// Only this asset (id or name).
    pub asset: Option<String>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { lookback_hours: 2.0, horizon_hours: 168.0, asset: None }
    }
}

/// The maintenance plan: health per asset and the ranked work orders.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// When it was made (the data's "now").
    pub now: Json,
    /// Hours of history the trends use.
    pub lookback_hours: f64,
    /// Hours ahead work orders are listed for.
    pub horizon_hours: f64,
    /// The band's quantiles, in percent.
    pub band_pct: [u32; 2],
    /// Minutes of steady samples a level is the median of.
    pub level_window_min: i64,
    /// The rules the planner followed, as text.
    pub rules: Vec<String>,
    /// Health per asset.
    pub assets: Vec<AssetHealth>,
    /// Ranked work orders, most urgent first.
    pub work_orders: Vec<WorkOrder>,
}

/// The health of one asset.
#[derive(Clone, Debug, Serialize)]
pub struct AssetHealth {
    /// Asset id.
    pub asset: String,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Running hours (the kind's `hours_tag`), latest.
    pub run_hours: Option<f64>,
    /// Run hours per hour over the last 24 h (the share of time it ran).
    pub run_hours_per_h: Option<f64>,
    /// Cycles (good + reject counters), latest.
    pub cycles: Option<f64>,
    /// Cycles per hour over the last 24 h.
    pub cycles_per_h: Option<f64>,
    /// Condition, temperature and level indicators.
    pub indicators: Vec<Indicator>,
    /// Service tasks and when they are due.
    pub services: Vec<ServiceDue>,
    /// Alarms and anomalies on the failure modes' tags in the look-back window.
    pub events: Vec<Fact>,
}

/// A health indicator: one tag of a failure mode.
#[derive(Clone, Debug, Serialize)]
pub struct Indicator {
    /// The failure mode it shows.
    pub failure_mode: String,
    /// The tag.
    pub tag: String,
    /// Its unit.
    pub unit: String,
    /// `condition` (projected to a failure limit), `temperature` or `level`.
    pub kind: &'static str,
    /// Steady samples in the window.
    pub samples: usize,
    /// Median of the last minutes of steady samples.
    pub level: Option<f64>,
    /// Time of the newest sample in the level.
    pub level_time: Option<Json>,
    /// Growth of the log-linear trend, % per hour.
    pub growth_pct_per_h: Option<f64>,
    /// Slope at the end of the window, unit per hour.
    pub slope_per_h: Option<f64>,
    /// High alarm limit `h`.
    pub alarm_h: Option<f64>,
    /// High-high alarm limit `hh`.
    pub alarm_hh: Option<f64>,
    /// Low alarm limit `l`.
    pub alarm_l: Option<f64>,
    /// Low-low alarm limit `ll`.
    pub alarm_ll: Option<f64>,
    /// `h` minus the level.
    pub margin_to_h: Option<f64>,
    /// The failure mode's failure limit (condition indicators).
    pub failure_limit: Option<f64>,
    /// The trend's rise over the look-back window (at full speed), in the tag's unit.
    pub rise: Option<f64>,
    /// The rise that counts as significant (a share of `h`, else of the failure limit).
    pub significant_rise: Option<f64>,
    /// Remaining useful life to the failure limit.
    pub rul: Option<Rul>,
}

/// Remaining useful life with its band.
#[derive(Clone, Debug, Serialize)]
pub struct Rul {
    /// Point estimate, hours from now.
    pub hours: f64,
    /// Lower band (10 %), hours.
    pub low_hours: f64,
    /// Upper band (90 %), hours; none when unbounded.
    pub high_hours: Option<f64>,
    /// When the limit is reached (point estimate).
    pub at: Json,
    /// When the lower band ends.
    pub low_at: Json,
    /// When the upper band ends.
    pub high_at: Option<Json>,
    /// Effective number of independent samples after the autocorrelation.
    pub effective_samples: f64,
    /// The degradation model projected.
    pub model: TrendModel,
}

/// A recurring service task and when it is due.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceDue {
    /// What is done.
    pub action: String,
    /// The failure mode it prevents.
    pub prevents: Option<String>,
    /// `run_hours` or `cycles`.
    pub basis: &'static str,
    /// Every this many run hours or cycles.
    pub interval: f64,
    /// The reading now.
    pub reading: f64,
    /// The reading it is next due at.
    pub next_due: f64,
    /// Run hours or cycles to go.
    pub to_due: f64,
    /// Run hours or cycles per hour (last 24 h).
    pub usage_per_h: Option<f64>,
    /// Hours from now until due, at that usage.
    pub due_in_hours: Option<f64>,
    /// When it is due.
    pub due_at: Option<Json>,
    /// Run hours or cycles past due (with a maintenance history).
    pub overdue_by: Option<f64>,
    /// When it was last recorded done (`linepilot maintenance done`), if ever.
    pub last_done: Option<Json>,
    /// The reading it was last done at.
    pub last_done_reading: Option<f64>,
    /// `history` (due one interval after it was last done) or `on_schedule` (no
    /// history: assumed done at every multiple of the interval).
    pub due_rule: &'static str,
    /// Parts and consumables.
    pub parts: Vec<String>,
}

/// One piece of evidence: a tag's value at a time, or an event.
#[derive(Clone, Debug, Serialize)]
pub struct Fact {
    /// What it is.
    pub what: String,
    /// The tag.
    pub tag: Option<String>,
    /// The value.
    pub value: Option<f64>,
    /// Its unit.
    pub unit: String,
    /// When.
    pub time: Option<Json>,
}

/// How soon a work order should be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Act now.
    High,
    /// Act soon.
    Medium,
    /// Plan it in.
    Low,
}

impl Priority {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }
}

/// A work order: what to do on which asset, why, by when, with which parts.
#[derive(Clone, Debug, Serialize)]
pub struct WorkOrder {
    /// 1 = most urgent.
    pub rank: usize,
    /// Asset id.
    pub asset: String,
    /// What to do.
    pub action: String,
    /// The failure mode it addresses.
    pub failure_mode: Option<String>,
    /// `condition`, `alarm` or `service`.
    pub source: &'static str,
    /// Why, with numbers from the evidence.
    pub why: String,
    /// The facts behind it.
    pub evidence: Vec<Fact>,
    /// Do it by then.
    pub due_by: Json,
    /// Hours from now until `due_by`.
    pub due_in_hours: f64,
    /// How soon.
    pub priority: Priority,
    /// Spare parts.
    pub parts: Vec<String>,
    /// Checks to make (from the manual).
    pub checks: Vec<String>,
    /// RUL point estimate, hours (condition work orders).
    pub rul_hours: Option<f64>,
    /// RUL lower band, hours.
    pub rul_low_hours: Option<f64>,
    /// RUL upper band, hours.
    pub rul_high_hours: Option<f64>,
}

impl Plan {
    /// The plan as a tool result, without the `why` texts: what the texts are checked against.
    pub fn facts(&self) -> ToolOutput {
        let mut result = serde_json::to_value(self).unwrap_or(Json::Null);
        if let Some(orders) = result.get_mut("work_orders").and_then(Json::as_array_mut) {
            for o in orders {
                if let Some(o) = o.as_object_mut() {
                    o.remove("why");
                }
            }
        }
        ToolOutput { tool: "maintenance_plan".into(), args: json!({}), result }
    }

    /// The work orders not yet done (all of them: the planner keeps no history yet),
    /// most urgent first — the shift report's "open maintenance items".
    pub fn open_items(&self) -> &[WorkOrder] {
        &self.work_orders
    }
}

/// Which degradation model a trend is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrendModel {
    /// `ln(y)` linear in time: exponential growth.
    Exponential,
    /// `ln(y)` quadratic in time: accelerating exponential growth.
    AcceleratingExponential,
}

/// A degradation trend fitted by least squares: `ln(y) = c0 + c1 u [+ c2 u^2] [+ g z]`,
/// `u = t - t_mean` in hours, `z` an operating-condition covariate (`ln` of speed over
/// full speed) that is 0 at the conditions the trend is projected at.
#[derive(Clone, Debug, PartialEq)]
pub struct TrendFit {
    /// The model.
    pub model: TrendModel,
    /// Samples.
    pub n: usize,
    /// Mean time, hours.
    pub t_mean: f64,
    /// Coefficients: `c0, c1`, then `c2` (accelerating), then `g` (with a covariate).
    pub coef: Vec<f64>,
    /// Their covariance, inflated for the residuals' autocorrelation.
    pub cov: Vec<Vec<f64>>,
    /// Lag-1 autocorrelation of the residuals in time order, clamped to `[0, 0.99]`.
    pub r1: f64,
}

/// When a trend reaches a limit, with its band.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crossing {
    /// Point estimate, hours after `at`.
    pub hours: f64,
    /// Early end of the band, hours after `at` (0 when the band already covers `at`).
    pub low: f64,
    /// Late end, hours after `at`; none when unbounded.
    pub high: Option<f64>,
    /// Effective sample size.
    pub n_eff: f64,
}

impl TrendFit {
    /// Fits `(t hours, y)` points in time order, with a covariate per point when
    /// `z` is given and varies (a constant covariate is left out); none with too few
    /// positive values or a singular design.
    pub fn fit(points: &[(f64, f64)], z: Option<&[f64]>, model: TrendModel) -> Option<TrendFit> {
        let quad = model == TrendModel::AcceleratingExponential;
        let z = z.filter(|z| {
            let (lo, hi) = z.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
            hi - lo > 1e-9
        });
        let rows: Vec<(f64, f64, f64)> = points
            .iter()
            .enumerate()
            .map(|(i, &(t, y))| (t, y, z.and_then(|z| z.get(i).copied()).unwrap_or(0.0)))
            .filter(|(t, y, z)| t.is_finite() && y.is_finite() && *y > 0.0 && z.is_finite())
            .collect();
        let k = 2 + quad as usize + z.is_some() as usize;
        let n = rows.len();
        if n < k + 2 {
            return None;
        }
        let t_mean = rows.iter().map(|r| r.0).sum::<f64>() / n as f64;
        let design = |t: f64, z: f64| {
            let u = t - t_mean;
            let mut x = vec![1.0, u];
            if quad {
                x.push(u * u);
            }
            if k > x.len() {
                x.push(z);
            }
            x
        };
        let mut xtx = vec![vec![0.0; k]; k];
        let mut xty = vec![0.0; k];
        for &(t, y, z) in &rows {
            let x = design(t, z);
            for i in 0..k {
                xty[i] += x[i] * y.ln();
                for j in 0..k {
                    xtx[i][j] += x[i] * x[j];
                }
            }
        }
        let inv = invert(&xtx)?;
        let coef: Vec<f64> = (0..k).map(|i| (0..k).map(|j| inv[i][j] * xty[j]).sum()).collect();
        let res: Vec<f64> = rows
            .iter()
            .map(|&(t, y, z)| y.ln() - design(t, z).iter().zip(&coef).map(|(x, c)| x * c).sum::<f64>())
            .collect();
        let ss: f64 = res.iter().map(|e| e * e).sum();
        let r1 = if ss > 0.0 { res.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / ss } else { 0.0 };
        let r1 = r1.clamp(0.0, 0.99);
        let scale = (1.0 + r1) / (1.0 - r1) * ss / (n - k) as f64;
        let cov = inv.iter().map(|row| row.iter().map(|v| v * scale).collect()).collect();
        Some(TrendFit { model, n, t_mean, coef, cov, r1 })
    }

    /// Parameters of the time trend (`c0, c1[, c2]`).
    fn trend_len(&self) -> usize {
        2 + (self.model == TrendModel::AcceleratingExponential) as usize
    }

    /// Effective sample size (AR(1): `n (1 - r) / (1 + r)`).
    pub fn n_eff(&self) -> f64 {
        (self.n as f64 * (1.0 - self.r1) / (1.0 + self.r1)).max(self.coef.len() as f64 + 1.0)
    }

    /// Degrees of freedom of the t quantiles.
    fn dof(&self) -> f64 {
        self.n_eff() - self.coef.len() as f64
    }

    /// The growth rate of `ln(y)` per hour at time `t` (at `z` = 0).
    pub fn growth_at(&self, t: f64) -> f64 {
        let u = t - self.t_mean;
        self.coef[1] + if self.trend_len() == 3 { 2.0 * self.coef[2] * u } else { 0.0 }
    }

    /// The fitted value at time `t` (at `z` = 0).
    pub fn value_at(&self, t: f64) -> f64 {
        let u = t - self.t_mean;
        let x = [1.0, u, u * u];
        (0..self.trend_len()).map(|i| x[i] * self.coef[i]).sum::<f64>().exp()
    }

    /// True when coefficient `i` is above `q` (the `p` quantile of t) standard errors.
    fn significant(&self, i: usize, p: f64) -> bool {
        let q = student_t_quantile(p, self.dof());
        self.coef.get(i).is_some_and(|c| *c > q * self.cov[i][i].max(0.0).sqrt())
    }

    /// The exponential rises significantly (one-sided, quantile `p`).
    pub fn rises(&self, p: f64) -> bool {
        self.model == TrendModel::Exponential && self.significant(1, p)
    }

    /// The accelerating model's curvature is significantly positive (one-sided, quantile `p`).
    pub fn accelerates(&self, p: f64) -> bool {
        self.model == TrendModel::AcceleratingExponential && self.significant(2, p)
    }

    /// When the trend (at `z` = 0) first reaches `limit` after time `at`, with the
    /// central `band` (0.8 for 10-90 %): for the exponential, Fieller's interval (where
    /// the fitted line's confidence band crosses the limit; no late end when the
    /// slope is not significantly positive); for the accelerating model, the delta
    /// method (the fitted value's standard error at the crossing over the slope there).
    /// None when the trend does not rise to the limit.
    pub fn crossing(&self, limit: f64, at: f64, band: f64) -> Option<Crossing> {
        if limit.is_nan() || limit <= 0.0 {
            return None;
        }
        let target = limit.ln();
        let ua = at - self.t_mean;
        let q = student_t_quantile(0.5 + band / 2.0, self.dof());
        let v = &self.cov;
        let n_eff = self.n_eff();
        let (c0, c1) = (self.coef[0], self.coef[1]);
        if self.trend_len() == 2 {
            if c1 <= 1e-12 {
                return None;
            }
            let d = target - c0;
            let point = d / c1 - ua;
            // (d - c1 u)^2 = q^2 (v00 + 2 u v01 + u^2 v11)
            let (q2, a) = (q * q, c1 * c1 - q * q * v[1][1]);
            let b = -2.0 * (d * c1 + q2 * v[0][1]);
            let c = d * d - q2 * v[0][0];
            // With a > 0 (the slope is significant) Fieller's interval is finite: the
            // discriminant is negative only by rounding.
            let disc = (b * b - 4.0 * a * c).max(0.0);
            let (low, high) = if a > 0.0 {
                let s = disc.sqrt();
                ((-b - s) / (2.0 * a) - ua, Some((-b + s) / (2.0 * a) - ua))
            } else {
                // Not significantly rising: no late end; the early end from the steepest
                // slope in the band, from the top of the band now.
                let steep = c1 + q * v[1][1].max(0.0).sqrt();
                let top = c0 + c1 * ua + q * (v[0][0] + 2.0 * ua * v[0][1] + ua * ua * v[1][1]).max(0.0).sqrt();
                ((target - top) / steep, None)
            };
            return Some(Crossing { hours: point.max(0.0), low: low.max(0.0), high: high.map(|h| h.max(0.0)), n_eff });
        }
        let c2 = self.coef[2];
        let roots: Vec<f64> = if c2.abs() < 1e-12 {
            if c1 > 0.0 {
                vec![(target - c0) / c1]
            } else {
                vec![]
            }
        } else {
            let disc = c1 * c1 - 4.0 * c2 * (c0 - target);
            if disc < 0.0 {
                vec![]
            } else {
                let s = disc.sqrt();
                vec![(-c1 - s) / (2.0 * c2), (-c1 + s) / (2.0 * c2)]
            }
        };
        let u = roots
            .into_iter()
            .filter(|u| *u >= ua && c1 + 2.0 * c2 * u > 0.0)
            .min_by(f64::total_cmp)
            .or_else(|| (c0 + c1 * ua + c2 * ua * ua >= target).then_some(ua))?;
        let x = [1.0, u, u * u];
        let var: f64 = (0..3).map(|i| (0..3).map(|j| x[i] * v[i][j] * x[j]).sum::<f64>()).sum();
        let sd = var.max(0.0).sqrt() / (c1 + 2.0 * c2 * u).max(1e-9);
        let point = u - ua;
        Some(Crossing {
            hours: point.max(0.0),
            low: (point - q * sd).max(0.0),
            high: Some((point + q * sd).max(0.0)),
            n_eff,
        })
    }
}

/// The inverse of a symmetric positive matrix (Gauss-Jordan with partial pivoting);
/// none when (near) singular.
fn invert(m: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let k = m.len();
    let mut a: Vec<Vec<f64>> = m
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut r = row.clone();
            r.extend((0..k).map(|j| if i == j { 1.0 } else { 0.0 }));
            r
        })
        .collect();
    let scale = m.iter().flatten().fold(0.0f64, |acc, v| acc.max(v.abs()));
    for col in 0..k {
        let piv = (col..k).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        let pivot = a[piv][col].abs();
        if pivot.is_nan() || pivot <= 1e-12 * scale {
            return None;
        }
        a.swap(col, piv);
        let p = a[col][col];
        a[col].iter_mut().for_each(|v| *v /= p);
        for r in 0..k {
            if r != col {
                let f = a[r][col];
                if f != 0.0 {
                    let pivot_row = a[col].clone();
                    a[r].iter_mut().zip(&pivot_row).for_each(|(v, pv)| *v -= f * pv);
                }
            }
        }
    }
    Some(a.into_iter().map(|r| r[k..].to_vec()).collect())
}

/// Projects `(t hours, y)` points (with an optional operating-condition covariate)
/// to `limit` from time `at`: the exponential's crossing; or, when the exponential
/// rises significantly and the data reject it for an accelerating exponential
/// (growth and curvature both beyond the band's upper quantile of their standard
/// errors), the accelerating model's crossing — if it lies within `reach` hours (an
/// extrapolated curvature is trusted no further than the window it was seen in) —
/// with the band widened to reach the exponential's (the exponential is the slow
/// end). None when nothing rises.
pub fn project(
    points: &[(f64, f64)],
    z: Option<&[f64]>,
    limit: f64,
    at: f64,
    band: f64,
    reach: f64,
) -> Option<(Crossing, TrendModel)> {
    let p = 0.5 + band / 2.0;
    let lin_fit = TrendFit::fit(points, z, TrendModel::Exponential)?;
    let lin = lin_fit.crossing(limit, at, band);
    let quad = TrendFit::fit(points, z, TrendModel::AcceleratingExponential)
        .filter(|f| lin_fit.rises(p) && f.accelerates(p))
        .and_then(|f| f.crossing(limit, at, band))
        .filter(|c| c.hours <= reach);
    match (lin, quad) {
        (Some(l), Some(q)) => Some((
            Crossing {
                hours: q.hours,
                low: q.low.min(l.low),
                high: match (q.high, l.high) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                },
                n_eff: q.n_eff,
            },
            TrendModel::AcceleratingExponential,
        )),
        (Some(l), None) => Some((l, TrendModel::Exponential)),
        (None, Some(q)) => Some((q, TrendModel::AcceleratingExponential)),
        (None, None) => None,
    }
}

/// Student's t quantile `p` (> 0.5) with `nu` degrees of freedom (at least 1), by
/// the Cornish-Fisher expansion around the normal quantile (within 4 % at `nu` = 1,
/// far closer above 5).
pub fn student_t_quantile(p: f64, nu: f64) -> f64 {
    let z = normal_quantile(p);
    let nu = nu.max(1.0);
    let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
    z + (z3 + z) / (4.0 * nu)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * nu * nu)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * nu.powi(3))
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// A numeric series read from the store, good samples only, in time order.
fn read(ctx: &ToolContext<'_>, tag: &str, from: Timestamp, to: Timestamp) -> Result<Vec<(i64, f64)>, ToolError> {
    let Some(id) = ctx.series_of(tag) else {
        return Ok(Vec::new());
    };
    let p = ctx.store.range(id, from, to)?;
    let mut v: Vec<(i64, f64)> = (0..p.len())
        .filter(|&i| p.quality_at(i).is_good())
        .filter_map(|i| p.values.num(i).filter(|x| x.is_finite()).map(|x| (p.ts[i], x)))
        .collect();
    if !p.sorted {
        v.sort_by_key(|s| s.0);
    }
    Ok(v)
}

/// The value of a step series at `ts` (the last sample at or before it).
fn at(series: &[(i64, f64)], ts: i64) -> Option<f64> {
    let i = series.partition_point(|s| s.0 <= ts);
    (i > 0).then(|| series[i - 1].1)
}

/// Which times an asset runs at steady full speed.
struct Steady {
    state: Vec<(i64, f64)>,
    running: Vec<f64>,
    speed: Vec<(i64, f64)>,
    min_speed: Option<f64>,
    full_speed: Option<f64>,
    rule_speed: Option<f64>,
}

impl Steady {
    fn new(ctx: &ToolContext<'_>, asset: &AssetConfig, from: Timestamp, to: Timestamp) -> Result<Steady, ToolError> {
        let st = asset.state.as_ref();
        let state_tag = st.and_then(|s| s.tag.as_deref());
        let speed_tag = st.and_then(|s| s.speed_tag.clone()).or_else(|| {
            ctx.config
                .tags
                .iter()
                .find(|t| t.asset == asset.id && tag_matches(&asset.id, "speed", &t.name))
                .map(|t| t.name.clone())
        });
        let pre = from - HOUR_NS;
        let state = match state_tag {
            Some(t) => read(ctx, t, pre, to)?,
            None => Vec::new(),
        };
        let running: Vec<f64> = st
            .map(|s| {
                s.codes
                    .iter()
                    .filter(|(_, m)| **m == MachineState::Running)
                    .filter_map(|(k, _)| k.parse::<f64>().ok())
                    .collect()
            })
            .unwrap_or_default();
        let speed = match &speed_tag {
            Some(t) => read(ctx, t, pre, to)?,
            None => Vec::new(),
        };
        let rule_speed = st.filter(|s| s.tag.is_none() && s.speed_tag.is_some()).map(|s| s.running_speed);
        let mut s = Steady { state, running, speed, min_speed: None, full_speed: None, rule_speed };
        let mut run_speeds: Vec<f64> =
            s.speed.iter().filter(|p| p.0 >= from && s.is_running(p.0) && p.1 > 0.0).map(|p| p.1).collect();
        if !run_speeds.is_empty() {
            run_speeds.sort_by(f64::total_cmp);
            let full = crate::analytics::rul::quantile(&run_speeds, 0.9);
            s.full_speed = Some(full);
            s.min_speed = Some(FULL_SPEED_SHARE * full);
        }
        Ok(s)
    }

    fn is_running(&self, ts: i64) -> bool {
        if !self.state.is_empty() {
            return at(&self.state, ts).is_some_and(|v| self.running.contains(&v.round()));
        }
        match (self.rule_speed, at(&self.speed, ts)) {
            (Some(r), Some(v)) => v > r,
            (None, Some(v)) => v > 0.0,
            (_, None) => self.speed.is_empty(),
        }
    }

    fn keeps(&self, ts: i64) -> bool {
        self.is_running(ts) && self.min_speed.is_none_or(|m| at(&self.speed, ts).is_some_and(|v| v >= m))
    }

    /// The operating-condition covariate at `ts`: `ln(speed / full speed)`.
    fn covariate(&self, ts: i64) -> Option<f64> {
        let full = self.full_speed.filter(|f| *f > 0.0)?;
        at(&self.speed, ts).filter(|v| *v > 0.0).map(|v| (v / full).ln())
    }
}

/// Makes the maintenance plan at `ctx.now`.
pub fn plan(ctx: &ToolContext<'_>, opts: &PlanOptions) -> Result<Plan, ToolError> {
    let bad = |m: String| ToolError::BadArgument { tool: "maintenance_plan", message: m };
    if !(opts.lookback_hours > 0.0 && opts.lookback_hours <= 168.0) {
        return Err(bad("the look-back must be between 0 and 168 hours".into()));
    }
    if !(opts.horizon_hours > 0.0 && opts.horizon_hours <= 24.0 * 366.0) {
        return Err(bad("the horizon must be between 0 hours and a year".into()));
    }
    let only = opts.asset.as_deref().map(|a| ctx.asset("maintenance_plan", a)).transpose()?;
    let mut assets = Vec::new();
    let mut orders = Vec::new();
    for a in &ctx.config.assets {
        if only.is_some_and(|o| o.id != a.id) {
            continue;
        }
        let Some(kind) = ctx.config.asset_kind_of(&a.id) else {
            continue;
        };
        let health = asset_health(ctx, a, kind, opts)?;
        orders.extend(work_orders(ctx, a, kind, &health, opts));
        assets.push(health);
    }
    orders.sort_by(|x: &WorkOrder, y: &WorkOrder| {
        x.due_in_hours.total_cmp(&y.due_in_hours).then(x.priority.cmp(&y.priority)).then(x.asset.cmp(&y.asset))
    });
    for (i, o) in orders.iter_mut().enumerate() {
        o.rank = i + 1;
    }
    debug!(assets = assets.len(), work_orders = orders.len(), "Maintenance plan made");
    Ok(Plan {
        now: ctx.time(ctx.now),
        lookback_hours: opts.lookback_hours,
        horizon_hours: opts.horizon_hours,
        band_pct: BAND_PCT,
        level_window_min: LEVEL_MINUTES,
        rules: vec![
            "condition tags are read at steady full speed: running, and at least 90 % of the window's full speed".into(),
            "remaining useful life: the trend of ln(condition tag) at full speed (exponential, or accelerating when the data demand it within one look-back window) projected to the failure mode's failure limit; the band is the 10-90 % interval of the crossing time with autocorrelation-adjusted variance".into(),
            "service tasks: due one interval after they were last recorded done; without a maintenance history a task is assumed done on schedule, so it is due at the next multiple of its interval".into(),
            "cycles are the asset's good + reject counter readings; usage per hour is measured over the last 24 hours".into(),
        ],
        assets,
        work_orders: orders,
    })
}

fn asset_tag<'c>(ctx: &ToolContext<'c>, asset: &str, suffix: &str) -> Option<&'c TagConfig> {
    ctx.config
        .tags
        .iter()
        .find(|t| t.asset == asset && t.name == format!("{asset}.{suffix}"))
        .or_else(|| ctx.config.tags.iter().find(|t| t.asset == asset && tag_matches(asset, suffix, &t.name)))
}

fn asset_health(
    ctx: &ToolContext<'_>,
    a: &AssetConfig,
    kind: &AssetKindConfig,
    opts: &PlanOptions,
) -> Result<AssetHealth, ToolError> {
    let to = ctx.now + 1;
    let from = ctx.now - (opts.lookback_hours * HOUR_NS as f64) as i64;
    let steady = Steady::new(ctx, a, from, to)?;
    let done = history(ctx, &a.id, to)?;
    let mut indicators = Vec::new();
    for mode in &kind.failure_modes {
        // After a repair of this mode, only what the new part shows counts.
        let repaired = done.iter().find(|d| d.failure_mode.as_deref() == Some(mode.id.as_str())).map(|d| d.ts);
        let mode_from = repaired.map_or(from, |r| r.max(from));
        for (i, suffix) in mode.tags.iter().enumerate() {
            let Some(tag) = asset_tag(ctx, &a.id, suffix) else {
                continue;
            };
            let limits = ctx.config.tag_alarms(tag).limits.filter(|l| l.enabled != Some(false));
            let alarms = limits.as_ref().map_or([None; 4], |l| [l.h, l.hh, l.l, l.ll]);
            let failure_limit = if i == 0 { mode.failure_limit } else { None };
            if failure_limit.is_none() && alarms.iter().all(Option::is_none) {
                continue;
            }
            let kind = if failure_limit.is_some() {
                "condition"
            } else if tag.unit.contains('C') && suffix.ends_with("temp") {
                "temperature"
            } else {
                "level"
            };
            indicators.push(indicator(ctx, &steady, mode, tag, kind, alarms, failure_limit, mode_from, to)?);
        }
    }
    // Usage: run hours and cycles.
    let usage_from = ctx.now - USAGE_HOURS * HOUR_NS;
    let reading = |tag: Option<&str>| -> Result<(Option<f64>, Option<f64>), ToolError> {
        let Some(t) = tag else { return Ok((None, None)) };
        let s = read(ctx, t, usage_from, to)?;
        let (Some(first), Some(last)) = (s.first(), s.last()) else { return Ok((None, None)) };
        let span_h = (last.0 - first.0) as f64 / HOUR_NS as f64;
        let rate = (span_h > 0.25).then(|| ((last.1 - first.1) / span_h).max(0.0));
        Ok((Some(last.1), rate))
    };
    let hours_tag = kind.hours_tag.as_deref().and_then(|s| asset_tag(ctx, &a.id, s)).map(|t| t.name.clone());
    let (run_hours, run_hours_per_h) = reading(hours_tag.as_deref())?;
    let (mut cycles, mut cycles_per_h) = (None, None);
    if let Some(c) = &a.counters {
        let parts: Vec<&str> = match (&c.total, &c.good, &c.reject) {
            (Some(t), _, _) => vec![t.as_str()],
            (None, Some(g), Some(r)) => vec![g.as_str(), r.as_str()],
            (None, Some(g), None) => vec![g.as_str()],
            _ => vec![],
        };
        for p in parts {
            let (v, r) = reading(Some(p))?;
            if let Some(v) = v {
                cycles = Some(cycles.unwrap_or(0.0) + v);
                cycles_per_h = Some(cycles_per_h.unwrap_or(0.0) + r.unwrap_or(0.0));
            }
        }
    }
    let mut services = Vec::new();
    for s in &kind.services {
        let (basis, interval, reading, usage) = match (s.every_hours, s.every_cycles, run_hours, cycles) {
            (Some(h), _, Some(rh), _) if h > 0.0 => ("run_hours", h, rh, run_hours_per_h),
            (_, Some(c), _, Some(cy)) if c > 0.0 => ("cycles", c, cy, cycles_per_h),
            _ => continue,
        };
        let last = done.iter().find(|d| d.action.eq_ignore_ascii_case(&s.action)).and_then(|d| {
            let r = if basis == "run_hours" { d.run_hours } else { d.cycles };
            r.filter(|r| *r <= reading).map(|r| (d, r))
        });
        let next_due = match last {
            Some((_, r)) => r + interval,
            None => ((reading / interval).floor() + 1.0) * interval,
        };
        let to_due = next_due - reading;
        let due_in_hours = if to_due <= 0.0 { Some(0.0) } else { usage.filter(|u| *u > 0.0).map(|u| to_due / u) };
        let due_at =
            due_in_hours.filter(|h| *h < 24.0 * 3660.0).map(|h| ctx.time(ctx.now + (h * HOUR_NS as f64) as i64));
        let (d_reading, d_to) = if basis == "run_hours" { (2, 2) } else { (0, 0) };
        services.push(ServiceDue {
            action: s.action.clone(),
            prevents: s.prevents.clone(),
            basis,
            interval,
            reading: round(reading, d_reading),
            next_due,
            to_due: round(to_due, d_to),
            usage_per_h: usage.map(|u| round(u, if basis == "run_hours" { 3 } else { 1 })),
            due_in_hours: due_in_hours.map(|h| round(h, 1)),
            due_at,
            overdue_by: (to_due < 0.0).then(|| round(-to_due, d_to)),
            last_done: last.map(|(d, _)| ctx.time(d.ts)),
            last_done_reading: last.map(|(_, r)| round(r, d_reading)),
            due_rule: if last.is_some() { "history" } else { "on_schedule" },
            parts: s.parts.clone(),
        });
    }
    // Alarms and anomalies on the modes' tags.
    let q = EventQuery {
        from: Some(from),
        to: Some(to),
        asset: Some(a.id.clone()),
        kinds: vec![EventKind::Alarm, EventKind::Anomaly],
        limit: Some(200),
        newest_first: true,
    };
    let events: Vec<Fact> = ctx
        .store
        .events()
        .query(&q)?
        .into_iter()
        .filter_map(|e| {
            let tag = e.details.get("tag").and_then(Json::as_str).map(str::to_string)?;
            kind.modes_for_tag(&a.id, &tag).next()?;
            let unit = ctx.config.tag(&tag).map(|t| t.unit.clone()).unwrap_or_default();
            Some(Fact {
                what: e.message.clone(),
                value: e.details.get("value").and_then(Json::as_f64).map(|v| round(v, 3)),
                tag: Some(tag),
                unit,
                time: Some(ctx.time(e.ts)),
            })
        })
        .collect();
    Ok(AssetHealth {
        asset: a.id.clone(),
        name: a.name.clone(),
        kind: a.kind.clone(),
        run_hours: run_hours.map(|v| round(v, 2)),
        run_hours_per_h: run_hours_per_h.map(|v| round(v, 3)),
        cycles,
        cycles_per_h: cycles_per_h.map(|v| round(v, 1)),
        indicators,
        services,
        events,
    })
}

/// A maintenance task recorded as done: an `audit` event whose details name it.
#[derive(Clone, Debug)]
struct Done {
    ts: Timestamp,
    action: String,
    failure_mode: Option<String>,
    run_hours: Option<f64>,
    cycles: Option<f64>,
}

/// The asset's recorded maintenance up to `to`, newest first.
fn history(ctx: &ToolContext<'_>, asset: &str, to: Timestamp) -> Result<Vec<Done>, ToolError> {
    let q = EventQuery {
        from: None,
        to: Some(to),
        asset: Some(asset.to_string()),
        kinds: vec![EventKind::Audit],
        limit: Some(1000),
        newest_first: true,
    };
    Ok(ctx
        .store
        .events()
        .query(&q)?
        .into_iter()
        .filter_map(|e| {
            let action = e.details.get("maintenance").and_then(Json::as_str)?.to_string();
            Some(Done {
                ts: e.ts,
                action,
                failure_mode: e.details.get("failure_mode").and_then(Json::as_str).map(str::to_string),
                run_hours: e.details.get("run_hours").and_then(Json::as_f64),
                cycles: e.details.get("cycles").and_then(Json::as_f64),
            })
        })
        .collect())
}

/// Records that `action` was done on `asset` at `ctx.now`: an `audit` event with the
/// asset's run hours and cycles then, which the planner's service intervals count
/// from. `action` is a service task's action or a failure mode's id or name (a
/// repair: the mode's trends then start afresh). Returns the event as stored.
pub fn record_done(
    ctx: &ToolContext<'_>,
    asset: &str,
    action: &str,
    user: Option<&str>,
) -> Result<crate::domain::Event, ToolError> {
    const TOOL: &str = "maintenance_done";
    let a = ctx.asset(TOOL, asset)?;
    let bad = |m: String| ToolError::BadArgument { tool: TOOL, message: m };
    let kind = ctx.config.asset_kind_of(&a.id).ok_or_else(|| bad(format!("no [[asset_kind]] for `{}`", a.kind)))?;
    let (action, mode) = if let Some(s) = kind.services.iter().find(|s| s.action.eq_ignore_ascii_case(action.trim())) {
        (s.action.clone(), None)
    } else if let Some(m) = kind
        .failure_modes
        .iter()
        .find(|m| m.id.eq_ignore_ascii_case(action.trim()) || m.name.eq_ignore_ascii_case(action.trim()))
    {
        (format!("Repair: {}", m.name), Some(m.id.clone()))
    } else {
        let known: Vec<&str> = kind
            .services
            .iter()
            .map(|s| s.action.as_str())
            .chain(kind.failure_modes.iter().map(|m| m.id.as_str()))
            .collect();
        return Err(bad(format!(
            "`{action}` is no service task or failure mode of `{}`: {}",
            a.kind,
            known.join(", ")
        )));
    };
    let latest = |tag: &str| -> Result<Option<f64>, ToolError> {
        Ok(read(ctx, tag, ctx.now - USAGE_HOURS * HOUR_NS, ctx.now + 1)?.last().map(|p| p.1))
    };
    let run_hours = match kind.hours_tag.as_deref().and_then(|s| asset_tag(ctx, &a.id, s)) {
        Some(t) => latest(&t.name)?,
        None => None,
    };
    let mut cycles = None;
    if let Some(c) = &a.counters {
        let parts: Vec<&String> = match (&c.total, &c.good, &c.reject) {
            (Some(t), _, _) => vec![t],
            (None, Some(g), r) => std::iter::once(g).chain(r).collect(),
            _ => vec![],
        };
        for p in parts {
            if let Some(v) = latest(p)? {
                cycles = Some(cycles.unwrap_or(0.0) + v);
            }
        }
    }
    let mut ev = crate::domain::Event {
        id: 0,
        ts: ctx.now,
        asset: Some(a.id.clone()),
        kind: EventKind::Audit,
        severity: 0,
        message: format!("maintenance done on {}: {action}", a.id),
        details: json!({
            "maintenance": action, "asset": a.id, "failure_mode": mode,
            "run_hours": run_hours, "cycles": cycles, "user": user,
        }),
    };
    ev.id = ctx.store.events().append(&ev)?;
    tracing::info!(asset = %a.id, action = %action, "Maintenance recorded");
    Ok(ev)
}

#[allow(clippy::too_many_arguments)]
fn indicator(
    ctx: &ToolContext<'_>,
    steady: &Steady,
    mode: &FailureModeConfig,
    tag: &TagConfig,
    kind: &'static str,
    [alarm_h, alarm_hh, alarm_l, alarm_ll]: [Option<f64>; 4],
    failure_limit: Option<f64>,
    from: Timestamp,
    to: Timestamp,
) -> Result<Indicator, ToolError> {
    let pts: Vec<(i64, f64)> = read(ctx, &tag.name, from, to)?.into_iter().filter(|p| steady.keeps(p.0)).collect();
    let mut ind = Indicator {
        failure_mode: mode.id.clone(),
        tag: tag.name.clone(),
        unit: tag.unit.clone(),
        kind,
        samples: pts.len(),
        level: None,
        level_time: None,
        growth_pct_per_h: None,
        slope_per_h: None,
        alarm_h,
        alarm_hh,
        alarm_l,
        alarm_ll,
        margin_to_h: None,
        failure_limit,
        rise: None,
        significant_rise: failure_limit.map(|f| round(SIGNIFICANT_CHANGE_SHARE * alarm_h.unwrap_or(f), 3)),
        rul: None,
    };
    let Some(&(last_ts, _)) = pts.last() else {
        return Ok(ind);
    };
    let mut recent: Vec<f64> = pts.iter().filter(|p| p.0 >= last_ts - LEVEL_MINUTES * MINUTE_NS).map(|p| p.1).collect();
    recent.sort_by(f64::total_cmp);
    let level = crate::analytics::rul::quantile(&recent, 0.5);
    ind.level = Some(round(level, 3));
    ind.level_time = Some(ctx.time(last_ts));
    ind.margin_to_h = alarm_h.map(|h| round(h - level, 3));
    if pts.len() < MIN_TREND_SAMPLES {
        return Ok(ind);
    }
    let hours = |ts: i64| (ts - ctx.now) as f64 / HOUR_NS as f64;
    let xy: Vec<(f64, f64)> = pts.iter().map(|p| (hours(p.0), p.1)).collect();
    let z: Option<Vec<f64>> = pts.iter().map(|p| steady.covariate(p.0)).collect();
    let Some(fit) = TrendFit::fit(&xy, z.as_deref(), TrendModel::Exponential) else {
        return Ok(ind);
    };
    ind.growth_pct_per_h = Some(round((fit.growth_at(0.0).exp() - 1.0) * 100.0, 1));
    ind.slope_per_h = Some(round(fit.growth_at(0.0) * fit.value_at(0.0), 3));
    let window_h = (to - from) as f64 / HOUR_NS as f64;
    ind.rise = Some(round(fit.value_at(0.0) - fit.value_at(-window_h), 3));
    if let Some(limit) = failure_limit {
        let band = (BAND_PCT[1] - BAND_PCT[0]) as f64 / 100.0;
        ind.rul = if level >= limit {
            let zero = ctx.time(ctx.now);
            Some(Rul {
                hours: 0.0,
                low_hours: 0.0,
                high_hours: Some(0.0),
                at: zero.clone(),
                low_at: zero.clone(),
                high_at: Some(zero),
                effective_samples: round(fit.n_eff(), 1),
                model: TrendModel::Exponential,
            })
        } else {
            let reach = (to - from) as f64 / HOUR_NS as f64;
            project(&xy, z.as_deref(), limit, 0.0, band, reach).map(|(c, model)| {
                let t = |h: f64| ctx.time(ctx.now + (h.min(24.0 * 3660.0) * HOUR_NS as f64) as i64);
                Rul {
                    hours: round(c.hours, 2),
                    low_hours: round(c.low, 2),
                    high_hours: c.high.map(|h| round(h, 2)),
                    at: t(c.hours),
                    low_at: t(c.low),
                    high_at: c.high.map(t),
                    effective_samples: round(c.n_eff, 1),
                    model,
                }
            })
        };
    }
    Ok(ind)
}

fn fact(i: &Indicator, what: &str, value: f64) -> Fact {
    Fact {
        what: what.into(),
        tag: Some(i.tag.clone()),
        value: Some(value),
        unit: i.unit.clone(),
        time: i.level_time.clone(),
    }
}

/// The level's worst alarm limit it is outside of: (indicator, `hh`/`h`/`ll`/`l`, limit).
fn outside_alarm_limit(i: &Indicator) -> Option<(&Indicator, &'static str, f64)> {
    let l = i.level?;
    [("hh", i.alarm_hh, true), ("h", i.alarm_h, true), ("ll", i.alarm_ll, false), ("l", i.alarm_l, false)]
        .into_iter()
        .find_map(|(w, lim, high)| lim.filter(|&m| if high { l > m } else { l < m }).map(|m| (i, w, m)))
}

/// A number as the facts hold it (they are rounded to at most 3 decimals), without
/// trailing zeros.
fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

fn when(t: &Json) -> String {
    let at = t.get("at").and_then(Json::as_str).unwrap_or_default();
    let date = t.get("local").and_then(Json::as_str).map(|l| l.get(..10).unwrap_or(l)).unwrap_or_default();
    format!("{at} on {date}")
}

fn work_orders(
    ctx: &ToolContext<'_>,
    a: &AssetConfig,
    kind: &AssetKindConfig,
    h: &AssetHealth,
    opts: &PlanOptions,
) -> Vec<WorkOrder> {
    let mut out = Vec::new();
    for mode in &kind.failure_modes {
        let inds: Vec<&Indicator> = h.indicators.iter().filter(|i| i.failure_mode == mode.id).collect();
        let over: Vec<(&Indicator, &str, f64)> = inds.iter().copied().filter_map(outside_alarm_limit).collect();
        let events: Vec<Fact> = h
            .events
            .iter()
            .filter(|e| e.tag.as_deref().is_some_and(|t| mode.tags.iter().any(|s| tag_matches(&a.id, s, t))))
            .cloned()
            .collect();
        let mut alarm_text = String::new();
        let mut evidence = Vec::new();
        for &(i, which, lim) in &over {
            let Some(l) = i.level else { continue };
            let side = if which.starts_with('h') { "above" } else { "below" };
            alarm_text.push_str(&format!(
                " {} at {} {} is {side} its alarm limit {which} {} {}.",
                i.tag,
                num(l),
                i.unit,
                num(lim),
                i.unit
            ));
            evidence.push(fact(i, &format!("level {side} the alarm limit {which}"), l));
        }
        if let Some(e) = events.first() {
            alarm_text.push_str(&format!(
                " {} alarm or anomaly events on these tags in the last {} h, the newest at {}.",
                events.len(),
                num(opts.lookback_hours),
                e.time.as_ref().and_then(|t| t.get("at")).and_then(Json::as_str).unwrap_or_default()
            ));
            evidence.extend(events.iter().take(5).cloned());
        }
        let cond = inds.iter().find(|i| {
            // Worn out already (at or over the failure limit), or a significant rise
            // projected to the limit within the horizon.
            i.rul.as_ref().is_some_and(|r| {
                r.hours <= 0.0
                    || (r.low_hours <= opts.horizon_hours
                        && matches!((i.rise, i.significant_rise), (Some(x), Some(t)) if x >= t))
            })
        });
        if let (Some(i), Some(r), Some(level), Some(limit)) =
            (cond, cond.and_then(|i| i.rul.as_ref()), cond.and_then(|i| i.level), cond.and_then(|i| i.failure_limit))
        {
            let band = match r.high_hours {
                Some(hi) => format!("{} to {} h", num(r.low_hours), num(hi)),
                None => format!("at least {} h", num(r.low_hours)),
            };
            let trend = match (i.rise, i.significant_rise, i.growth_pct_per_h, i.slope_per_h) {
                (Some(rise), Some(sig), Some(g), Some(s)) => format!(
                    "; over the last {} h its trend rose {} {} (significant from {} {}) and grows {} % per hour ({} {} per hour now)",
                    num(opts.lookback_hours),
                    num(rise),
                    i.unit,
                    num(sig),
                    i.unit,
                    num(g),
                    num(s),
                    i.unit
                ),
                _ => String::new(),
            };
            let why = if r.hours <= 0.0 {
                format!(
                    "{} is {} {} at steady full speed (median of the last {} min), at or over the failure limit {} {}.{}",
                    i.tag, num(level), i.unit, LEVEL_MINUTES, num(limit), i.unit, alarm_text
                )
            } else {
                format!(
                    "{} is {} {} at steady full speed (median of the last {} min){}; the {} trend reaches the failure limit {} {} in {} h ({}-{} %: {}), at {}.{}",
                    i.tag,
                    num(level),
                    i.unit,
                    LEVEL_MINUTES,
                    trend,
                    match r.model {
                        TrendModel::Exponential => "exponential",
                        TrendModel::AcceleratingExponential => "accelerating",
                    },
                    num(limit),
                    i.unit,
                    num(r.hours),
                    BAND_PCT[0],
                    BAND_PCT[1],
                    band,
                    when(&r.at),
                    alarm_text
                )
            };
            let mut ev = vec![fact(i, "level at steady full speed", level)];
            if let Some(s) = i.slope_per_h {
                ev.push(Fact { what: "slope per hour".into(), ..fact(i, "", s) });
            }
            ev.push(Fact { what: "failure limit".into(), time: None, ..fact(i, "", limit) });
            ev.extend(evidence.clone());
            out.push(WorkOrder {
                rank: 0,
                asset: a.id.clone(),
                action: format!("Repair before failure: {} (change the worn parts)", mode.name),
                failure_mode: Some(mode.id.clone()),
                source: "condition",
                why,
                evidence: ev,
                due_by: r.low_at.clone(),
                due_in_hours: r.low_hours,
                priority: if r.low_hours < HIGH_PRIORITY_HOURS { Priority::High } else { Priority::Medium },
                parts: mode.parts.clone(),
                checks: mode.checks.clone(),
                rul_hours: Some(r.hours),
                rul_low_hours: Some(r.low_hours),
                rul_high_hours: r.high_hours,
            });
        } else if !over.is_empty() || !events.is_empty() {
            let trip = over.iter().any(|(_, which, _)| *which == "hh" || *which == "ll");
            let priority = match (trip, over.is_empty()) {
                (true, _) => Priority::High,
                (false, false) => Priority::Medium,
                (false, true) => Priority::Low,
            };
            out.push(WorkOrder {
                rank: 0,
                asset: a.id.clone(),
                action: format!("Inspect now: {}", mode.name),
                failure_mode: Some(mode.id.clone()),
                source: "alarm",
                why: alarm_text.trim().to_string(),
                evidence,
                due_by: ctx.time(ctx.now),
                due_in_hours: 0.0,
                priority,
                parts: mode.parts.clone(),
                checks: mode.checks.clone(),
                rul_hours: None,
                rul_low_hours: None,
                rul_high_hours: None,
            });
        }
    }
    for s in &h.services {
        let (Some(due_h), Some(due_at), Some(usage)) = (s.due_in_hours, s.due_at.as_ref(), s.usage_per_h) else {
            continue;
        };
        if due_h > opts.horizon_hours {
            continue;
        }
        let (what, unit) = if s.basis == "run_hours" { ("Run hours", "h") } else { ("Cycles", "cycles") };
        let basis = match (&s.last_done, s.last_done_reading) {
            (Some(t), Some(r)) => format!("last done at {} {unit} ({})", num(r), when(t)),
            _ => "assumed done on schedule".to_string(),
        };
        let why = match s.overdue_by {
            Some(over) => format!(
                "{what} {} {unit}; every {} {unit}, so due at {} {unit} ({basis}): overdue by {} {unit}.",
                num(s.reading),
                num(s.interval),
                num(s.next_due),
                num(over)
            ),
            None => format!(
                "{what} {} {unit}; every {} {unit}, so next due at {} {unit} ({basis}): {} {unit} to go; at {} {unit} per hour that is {} h, by {}.",
                num(s.reading),
                num(s.interval),
                num(s.next_due),
                num(s.to_due),
                num(usage),
                num(due_h),
                when(due_at)
            ),
        };
        let tag = if s.basis == "run_hours" {
            kind.hours_tag
                .as_deref()
                .and_then(|t| ctx.config.tags.iter().find(|c| c.asset == a.id && tag_matches(&a.id, t, &c.name)))
                .map(|t| t.name.clone())
        } else {
            None
        };
        out.push(WorkOrder {
            rank: 0,
            asset: a.id.clone(),
            action: s.action.clone(),
            failure_mode: s.prevents.clone(),
            source: "service",
            why,
            evidence: vec![Fact {
                what: format!("{} reading", s.basis),
                tag,
                value: Some(s.reading),
                unit: unit.into(),
                time: Some(ctx.time(ctx.now)),
            }],
            due_by: due_at.clone(),
            due_in_hours: due_h,
            priority: if s.overdue_by.is_some() { Priority::Medium } else { Priority::Low },
            parts: s.parts.clone(),
            checks: Vec::new(),
            rul_hours: None,
            rul_low_hours: None,
            rul_high_hours: None,
        });
    }
    out
}

/// The work orders as CSV (RFC 4180 quoting): rank, asset, action, failure_mode,
/// due_by (UTC), priority, rul_hours, rul_low_hours, rul_high_hours, parts (`; `
/// separated), why.
pub fn to_csv(plan: &Plan) -> String {
    let mut out = String::from(
        "rank,asset,action,failure_mode,due_by,priority,rul_hours,rul_low_hours,rul_high_hours,parts,why\r\n",
    );
    let opt = |v: Option<f64>| v.map(num).unwrap_or_default();
    for o in &plan.work_orders {
        let row = [
            o.rank.to_string(),
            o.asset.clone(),
            o.action.clone(),
            o.failure_mode.clone().unwrap_or_default(),
            o.due_by.get("utc").and_then(Json::as_str).unwrap_or_default().to_string(),
            o.priority.as_str().to_string(),
            opt(o.rul_hours),
            opt(o.rul_low_hours),
            opt(o.rul_high_hours),
            o.parts.join("; "),
            o.why.clone(),
        ];
        let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The work orders as a text table for a terminal.
pub fn table(plan: &Plan) -> String {
    let mut out = format!(
        "Maintenance plan at {} ({} work orders within {} h)\n",
        plan.now.get("local").and_then(Json::as_str).unwrap_or_default(),
        plan.work_orders.len(),
        num(plan.horizon_hours)
    );
    out.push_str(&format!(
        "{:>4}  {:<12} {:<8} {:<17} {:<10} {}\n",
        "rank", "asset", "priority", "due by", "RUL h", "action"
    ));
    for o in &plan.work_orders {
        let rul = match (o.rul_low_hours, o.rul_hours, o.rul_high_hours) {
            (Some(l), Some(p), Some(h)) => format!("{}<{}<{}", num(round(l, 1)), num(round(p, 1)), num(round(h, 1))),
            (Some(l), Some(p), None) => format!("{}<{}", num(round(l, 1)), num(round(p, 1))),
            _ => "-".into(),
        };
        let due = o.due_by.get("local").and_then(Json::as_str).map(|l| l.get(..16).unwrap_or(l)).unwrap_or_default();
        out.push_str(&format!(
            "{:>4}  {:<12} {:<8} {:<17} {:<10} {}\n      why: {}\n",
            o.rank,
            o.asset,
            o.priority.as_str(),
            due,
            rul,
            o.action,
            o.why
        ));
        if !o.parts.is_empty() {
            out.push_str(&format!("      parts: {}\n", o.parts.join("; ")));
        }
    }
    out
}

/// `maintenance_plan {asset?, hours?, horizon_hours?}`: the tool's result.
pub fn tool(ctx: &ToolContext<'_>, args: &Json) -> Result<Json, ToolError> {
    let mut opts =
        PlanOptions { asset: args.get("asset").and_then(Json::as_str).map(str::to_string), ..PlanOptions::default() };
    if let Some(h) = args.get("hours").and_then(Json::as_f64) {
        opts.lookback_hours = h;
    }
    if let Some(h) = args.get("horizon_hours").and_then(Json::as_f64) {
        opts.horizon_hours = h;
    }
    Ok(serde_json::to_value(plan(ctx, &opts)?).unwrap_or(Json::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic normal noise source (SplitMix64 + Box-Muller).
    struct Noise(u64);
    impl Noise {
        fn unit(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn gauss(&mut self) -> f64 {
            let (u, v) = (self.unit().max(1e-300), self.unit());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    /// y = 2 exp(0.5 t) with 3 % multiplicative noise over the two hours before t = 0:
    /// the limit 11.2 is reached at t = 2 ln(5.6) = 3.4455 h.
    fn exponential(seed: u64, noise: f64) -> Vec<(f64, f64)> {
        let mut n = Noise(seed);
        (0..240)
            .map(|i| -2.0 + i as f64 / 120.0)
            .map(|t| (t, 2.0 * (0.5 * t).exp() * (1.0 + noise * n.gauss())))
            .collect()
    }

    fn exp_fit(pts: &[(f64, f64)]) -> Option<TrendFit> {
        TrendFit::fit(pts, None, TrendModel::Exponential)
    }

    #[test]
    fn an_exponential_trend_and_its_crossing_are_recovered() {
        let truth = 2.0 * 5.6f64.ln();
        let fit = exp_fit(&exponential(7, 0.03)).expect("fit");
        assert!((fit.growth_at(0.0) - 0.5).abs() < 0.02, "{fit:?}");
        assert!((fit.value_at(0.0) - 2.0).abs() < 0.05, "{fit:?}");
        let c = fit.crossing(11.2, 0.0, 0.8).expect("rises");
        assert!((c.hours - truth).abs() < 0.15, "{c:?}");
        assert!(c.low < truth && c.high.is_some_and(|h| h > truth), "{c:?}");
        // Noise-free data: the band closes on the truth.
        let exact = exp_fit(&exponential(7, 0.0)).expect("fit").crossing(11.2, 0.0, 0.8).expect("rises");
        assert!(
            (exact.hours - truth).abs() < 1e-9 && (exact.high.unwrap_or(f64::NAN) - exact.low).abs() < 1e-6,
            "{exact:?} vs {truth}"
        );
    }

    #[test]
    fn the_band_covers_about_its_nominal_share() {
        let truth = 2.0 * 5.6f64.ln();
        let runs = 400;
        let covered = (0..runs)
            .filter(|&s| {
                let c = exp_fit(&exponential(1000 + s, 0.05)).and_then(|f| f.crossing(11.2, 0.0, 0.8));
                c.is_some_and(|c| c.low <= truth && c.high.is_some_and(|h| truth <= h))
            })
            .count();
        let share = covered as f64 / runs as f64;
        assert!((0.72..=0.88).contains(&share), "10-90 % band covered the truth in {share:.3} of the runs");
    }

    #[test]
    fn a_flat_or_falling_trend_has_no_crossing_and_a_weak_one_no_late_end() {
        let flat: Vec<(f64, f64)> = (0..100).map(|i| (i as f64 / 50.0, 2.0)).collect();
        assert!(exp_fit(&flat).and_then(|f| f.crossing(11.2, 2.0, 0.8)).is_none());
        let falling: Vec<(f64, f64)> = (0..100).map(|i| (i as f64 / 50.0, 2.0 - i as f64 / 100.0)).collect();
        assert!(project(&falling, None, 11.2, 2.0, 0.8, 2.0).is_none());
        let mut n = Noise(3);
        let weak: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64 / 50.0, 2.0 * (0.002 * i as f64 / 50.0).exp() * (1.0 + 0.05 * n.gauss())))
            .collect();
        if let Some(c) = exp_fit(&weak).and_then(|f| f.crossing(11.2, 2.0, 0.8)) {
            assert!(c.high.is_none() && c.low > 10.0, "{c:?}");
        }
    }

    #[test]
    fn an_operating_condition_covariate_removes_a_speed_confound() {
        // A healthy bearing: vibration follows speed (y ∝ speed^0.9) and the machine
        // slows down over the window; without the covariate that reads as wear.
        let mut n = Noise(21);
        let (mut pts, mut z) = (Vec::new(), Vec::new());
        for i in 0..240 {
            let t = -2.0 + i as f64 / 120.0;
            let speed = 1.0 - 0.05 * (t + 2.0) + 0.02 * n.gauss();
            pts.push((t, 2.0 * speed.powf(0.9) * (1.0 + 0.01 * n.gauss())));
            z.push(speed.ln());
        }
        let rising: Vec<(f64, f64)> = pts.iter().map(|&(t, y)| (-2.0 - t, y)).rev().collect();
        let z_rev: Vec<f64> = z.iter().rev().copied().collect();
        // Time reversed: the speed rises, so does the vibration.
        let naive = exp_fit(&rising).expect("fit");
        assert!(naive.rises(0.9), "{naive:?}");
        let fair = TrendFit::fit(&rising, Some(&z_rev), TrendModel::Exponential).expect("fit");
        assert!(!fair.rises(0.9) && (fair.coef[2] - 0.9).abs() < 0.1, "{fair:?}");
        assert!(project(&rising, Some(&z_rev), 11.2, 0.0, 0.8, 2.0).is_none_or(|(c, _)| c.low > 168.0));
    }

    #[test]
    fn an_accelerating_trend_is_projected_with_the_accelerating_model() {
        // ln y = ln 2 + 0.8 t + 0.15 t^2 over the two hours before t = 0, 2 % noise:
        // 11.2 is reached where 0.15 t^2 + 0.8 t = ln 5.6.
        let truth = (-0.8 + (0.64f64 + 0.6 * 5.6f64.ln()).sqrt()) / 0.3;
        let mut n = Noise(11);
        let pts: Vec<(f64, f64)> = (0..240)
            .map(|i| -2.0 + i as f64 / 120.0)
            .map(|t| (t, 2.0 * (0.8 * t + 0.15 * t * t).exp() * (1.0 + 0.02 * n.gauss())))
            .collect();
        let quad = TrendFit::fit(&pts, None, TrendModel::AcceleratingExponential).expect("fit");
        assert!((quad.coef[2] - 0.15).abs() < 0.03 && quad.accelerates(0.9), "{quad:?}");
        let (c, model) = project(&pts, None, 11.2, 0.0, 0.8, 2.0).expect("rises");
        assert_eq!(model, TrendModel::AcceleratingExponential);
        assert!((c.hours - truth).abs() < 0.1, "{c:?} vs {truth}");
        assert!(c.low <= truth && c.high.is_some_and(|h| h >= truth), "{c:?} vs {truth}");
        // The plain exponential projects it late; the band reaches out to it.
        let late = exp_fit(&pts).and_then(|f| f.crossing(11.2, 0.0, 0.8)).expect("rises");
        assert!(late.hours > truth + 0.3 && c.high.is_some_and(|h| h >= late.high.unwrap_or(f64::INFINITY) - 1e-9));
        // Beyond its reach the curvature is not extrapolated.
        let (_, model) = project(&pts, None, 11.2, 0.0, 0.8, 1.0).expect("rises");
        assert_eq!(model, TrendModel::Exponential);
        // A pure exponential is not taken for an accelerating one.
        let (_, model) = project(&exponential(5, 0.03), None, 11.2, 0.0, 0.8, 2.0).expect("rises");
        assert_eq!(model, TrendModel::Exponential);
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        assert!((normal_quantile(0.9) - 1.281_551_6).abs() < 1e-6);
        for (nu, t) in [(1.0, 3.078), (5.0, 1.476), (30.0, 1.310), (1e6, 1.2816)] {
            let q = student_t_quantile(0.9, nu);
            assert!((q - t).abs() / t < 0.04, "nu {nu}: {q} vs {t}");
        }
    }

    #[test]
    fn csv_cells_are_quoted_when_they_must_be() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a, b"), "\"a, b\"");
        assert_eq!(csv_cell("say \"hi\"\nthere"), "\"say \"\"hi\"\"\nthere\"");
    }
}
