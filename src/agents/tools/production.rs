//! Tools about production: OEE and downtime, from the analytics' own computations.

use serde_json::{json, Value as Json};

use super::{round, ToolContext, ToolError};
use crate::analytics::oee::{self as o, AssetOee, CauseDowntime};

fn pct(v: Option<f64>) -> Json {
    v.map_or(Json::Null, |x| json!(round(x * 100.0, 1)))
}

fn minutes(s: f64) -> f64 {
    round(s / 60.0, 1)
}

fn causes(list: &[CauseDowntime], n: usize) -> Vec<Json> {
    list.iter().take(n).map(|c| json!({ "cause": c.cause, "minutes": minutes(c.seconds), "stops": c.stops })).collect()
}

fn asset_oee(a: &AssetOee) -> Json {
    json!({
        "asset": a.asset,
        "oee_pct": pct(a.oee), "availability_pct": pct(a.availability),
        "performance_pct": pct(a.performance), "quality_pct": pct(a.quality),
        "good": a.good, "reject": a.reject, "total": a.total,
        "planned_min": minutes(a.planned_s), "run_min": minutes(a.run_s), "downtime_min": minutes(a.downtime_s),
        "top_downtime": causes(&a.downtime, 3),
        "failures": a.failures,
        "mtbf_min": a.mtbf_s.map(minutes), "mttr_min": a.mttr_s.map(minutes),
    })
}

fn window_json(ctx: &ToolContext<'_>, w: &o::Window) -> Json {
    json!({ "shift": w.shift, "from": ctx.time(w.from), "to": ctx.time(w.to), "planned_min": minutes(w.planned_s) })
}

/// `oee {asset?, shift | from, to | hours}`: OEE with availability, performance and
/// quality, counts and the top downtime causes, for the line (its key machine) and
/// each machine (default: the last shift that ended).
pub fn oee(ctx: &ToolContext<'_>, args: &Json) -> Result<Json, ToolError> {
    let args = default_shift(args);
    let (from, to, shift) = ctx.window("oee", &args, 8.0)?;
    let only = args.get("asset").and_then(Json::as_str).map(|a| ctx.asset("oee", a)).transpose()?;
    let r = o::window_oee(ctx.store, ctx.config, ctx.calendar, from, to, shift)?;
    let lines: Vec<Json> = r
        .lines
        .iter()
        .map(|l| {
            let mut j = asset_oee(&l.oee);
            j["line"] = json!(l.line);
            j["key_asset"] = json!(l.key_asset);
            j
        })
        .collect();
    let machines: Vec<Json> = r.assets.iter().filter(|a| only.is_none_or(|x| x.id == a.asset)).map(asset_oee).collect();
    Ok(json!({ "window": window_json(ctx, &r.window), "lines": lines, "machines": machines }))
}

/// `downtime {asset?, shift | from, to | hours}`: downtime by cause and every stop
/// (local start time, minutes, cause) per machine (default: the last shift that ended).
pub fn downtime(ctx: &ToolContext<'_>, args: &Json) -> Result<Json, ToolError> {
    let args = default_shift(args);
    let (from, to, shift) = ctx.window("downtime", &args, 8.0)?;
    let only = args.get("asset").and_then(Json::as_str).map(|a| ctx.asset("downtime", a)).transpose()?;
    let mut r = o::downtime(ctx.store, ctx.config, ctx.calendar, from, to, only.map(|a| a.id.as_str()))?;
    r.window.shift = shift;
    let machines: Vec<Json> = r
        .assets
        .iter()
        .map(|a| {
            let stops: Vec<Json> = a
                .stops
                .iter()
                .map(|s| {
                    json!({ "from": ctx.time(s.from), "to": ctx.time(s.to), "minutes": minutes(s.seconds), "cause": s.cause, "state": s.state.as_str() })
                })
                .collect();
            json!({
                "asset": a.asset, "downtime_min": minutes(a.downtime_s), "planned_min": minutes(a.planned_s),
                "causes": causes(&a.causes, usize::MAX), "failures": a.failures,
                "mtbf_min": a.mtbf_s.map(minutes), "mttr_min": a.mttr_s.map(minutes), "stops": stops,
            })
        })
        .collect();
    Ok(json!({ "window": window_json(ctx, &r.window), "machines": machines }))
}

/// Without a window argument, the last shift that ended.
fn default_shift(args: &Json) -> Json {
    let mut a = if args.is_object() { args.clone() } else { json!({}) };
    if ["shift", "from", "to", "hours"].iter().all(|k| a.get(k).is_none_or(Json::is_null)) {
        a["shift"] = json!("last");
    }
    a
}
