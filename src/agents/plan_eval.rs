//! The maintenance planner against a linesim run's ground truth: at chosen times
//! before each simulated wear-out failure (a `fault_start` record with a
//! `failure_at`), does the plan rank the worn part's work order first, does its
//! remaining-useful-life band contain the true time to failure, and are the other
//! assets' parts of the same failure mode left alone?

use std::time::Instant;

use serde::Serialize;
use serde_json::Value as Json;

use super::plan::{self, PlanOptions, TrendModel};
use super::tools::{ToolContext, ToolError};
use crate::config::knowledge::tag_matches;
use crate::config::{Calendar, Config};
use crate::store::Store;

const HOUR_NS: f64 = 3.6e12;

/// One plan made at one time before one failure, and how it did.
#[derive(Clone, Debug, Serialize)]
pub struct RulCheck {
    /// Hours after the run's start the plan was made at.
    pub offset_hours: f64,
    /// The plan's "now" (local `HH:MM`, local and UTC).
    pub now: Json,
    /// The asset that fails.
    pub asset: String,
    /// The failure mode (the one whose first tag is the fault's first signal).
    pub failure_mode: String,
    /// True hours from now to the failure.
    pub true_hours: f64,
    /// Predicted RUL, hours.
    pub rul_hours: Option<f64>,
    /// Its band's early end.
    pub rul_low_hours: Option<f64>,
    /// Its band's late end (none: unbounded).
    pub rul_high_hours: Option<f64>,
    /// The model projected.
    pub model: Option<TrendModel>,
    /// Whether the band contains the true time to failure.
    pub covered: bool,
    /// The rank of the asset's work order for the mode, if the plan has one.
    pub rank: Option<usize>,
    /// Its rank among the condition work orders (an active alarm elsewhere, due
    /// now, may rank above it).
    pub condition_rank: Option<usize>,
    /// Other assets with a condition work order for the same failure mode.
    pub false_alarms: Vec<String>,
    /// Milliseconds the plan took.
    pub plan_ms: f64,
}

/// Plans at `offsets_h` hours after the run's start (those before each failure and
/// within the stored data) and checks every wear-out failure of `truth`.
pub fn check(
    store: &Store,
    config: &Config,
    calendar: &Calendar,
    truth: &[Json],
    offsets_h: &[f64],
    opts: &PlanOptions,
) -> Result<Vec<RulCheck>, ToolError> {
    let newest = ToolContext::at_newest_data(store, config, calendar).now;
    let start = truth.iter().find(|r| r["kind"] == "run_start").and_then(|r| r["ts_ns"].as_i64());
    let Some(start) = start else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for rec in truth.iter().filter(|r| r["kind"] == "fault_start") {
        let (Some(asset), Some(failure_at), Some(signal)) = (
            rec["asset"].as_str(),
            rec["details"]["failure_at"].as_str(),
            rec["details"]["signals"].get(0).and_then(Json::as_str),
        ) else {
            continue;
        };
        let failure_at = calendar.parse_time(failure_at)?;
        let Some(mode) = config.asset_kind_of(asset).and_then(|k| {
            k.failure_modes
                .iter()
                .find(|m| m.failure_limit.is_some() && m.tags.first().is_some_and(|t| tag_matches(asset, t, signal)))
        }) else {
            continue;
        };
        for &off in offsets_h {
            let now = start + (off * HOUR_NS) as i64;
            if now >= failure_at || now > newest {
                continue;
            }
            let ctx = ToolContext { store, config, calendar, now };
            let t0 = Instant::now();
            let p = plan::plan(&ctx, opts)?;
            let plan_ms = t0.elapsed().as_secs_f64() * 1e3;
            let rul = p
                .assets
                .iter()
                .filter(|a| a.asset == asset)
                .flat_map(|a| &a.indicators)
                .find(|i| i.failure_mode == mode.id && i.failure_limit.is_some())
                .and_then(|i| i.rul.clone());
            let true_hours = (failure_at - now) as f64 / HOUR_NS;
            let covered =
                rul.as_ref().is_some_and(|r| r.low_hours <= true_hours && r.high_hours.is_none_or(|h| true_hours <= h));
            let condition =
                |o: &&plan::WorkOrder| o.source == "condition" && o.failure_mode.as_deref() == Some(&mode.id);
            let rank = p.work_orders.iter().filter(condition).find(|o| o.asset == asset).map(|o| o.rank);
            let condition_rank = p
                .work_orders
                .iter()
                .filter(|o| o.source == "condition")
                .position(|o| o.asset == asset && o.failure_mode.as_deref() == Some(&mode.id))
                .map(|i| i + 1);
            let false_alarms =
                p.work_orders.iter().filter(condition).filter(|o| o.asset != asset).map(|o| o.asset.clone()).collect();
            out.push(RulCheck {
                offset_hours: off,
                now: p.now.clone(),
                asset: asset.to_string(),
                failure_mode: mode.id.clone(),
                true_hours,
                rul_hours: rul.as_ref().map(|r| r.hours),
                rul_low_hours: rul.as_ref().map(|r| r.low_hours),
                rul_high_hours: rul.as_ref().and_then(|r| r.high_hours),
                model: rul.as_ref().map(|r| r.model),
                covered,
                rank,
                condition_rank,
                false_alarms,
                plan_ms,
            });
        }
    }
    Ok(out)
}

/// The checks as a Markdown table.
pub fn markdown(checks: &[RulCheck]) -> String {
    let mut s = String::from(
        "| now (run + h) | asset | failure mode | true time to failure | predicted RUL | 10-90 % band | model | band holds truth | rank (among condition) | other assets flagged | plan time |\n\
         |---|---|---|---:|---:|---|---|---|---|---|---:|\n",
    );
    let h = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} h"));
    for c in checks {
        let band = match (c.rul_low_hours, c.rul_high_hours) {
            (Some(l), Some(hi)) => format!("{l:.2} - {hi:.2} h"),
            (Some(l), None) => format!("≥ {l:.2} h"),
            _ => "-".into(),
        };
        let model = match c.model {
            Some(TrendModel::Exponential) => "exponential",
            Some(TrendModel::AcceleratingExponential) => "accelerating",
            None => "-",
        };
        s.push_str(&format!(
            "| {} (+{}) | {} | {} | {:.2} h | {} | {} | {} | {} | {} | {} | {:.0} ms |\n",
            c.now.get("at").and_then(Json::as_str).unwrap_or_default(),
            c.offset_hours,
            c.asset,
            c.failure_mode,
            c.true_hours,
            h(c.rul_hours),
            band,
            model,
            if c.covered { "yes" } else { "no" },
            match (c.rank, c.condition_rank) {
                (Some(r), Some(k)) => format!("{r} ({k})"),
                _ => "-".into(),
            },
            if c.false_alarms.is_empty() { "none".into() } else { c.false_alarms.join(", ") },
            c.plan_ms
        ));
    }
    s
}
