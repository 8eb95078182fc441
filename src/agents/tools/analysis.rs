//! Tools that relate things: two periods compared, the tags that moved with an
//! anomaly, and what maintenance was done.

use serde_json::{json, Value as Json};

use super::{arg, round, ToolContext, ToolError};
use crate::domain::{EventKind, Timestamp};
use crate::store::events::EventQuery;

const MIN: i64 = 60_000_000_000;

/// `compare {tag? | asset?, first: window, second: window}`: a tag's statistics, or the
/// OEE of the line (or one machine), over two periods, with the change from the first
/// to the second. A window is `{shift}` or `{from, to}` or `{hours}` as in the other tools.
pub fn compare(ctx: &ToolContext<'_>, args: &Json) -> Result<Json, ToolError> {
    let bad = |m: &str| ToolError::BadArgument { tool: "compare", message: m.to_string() };
    let first = args.get("first").filter(|f| f.is_object()).ok_or_else(|| bad("`first` (a window) is required"))?;
    let second = args.get("second").filter(|f| f.is_object()).ok_or_else(|| bad("`second` (a window) is required"))?;
    let with = |w: &Json, key: &str, v: &Json| {
        let mut a = w.clone();
        a[key] = v.clone();
        a
    };
    if let Some(tag) = args.get("tag").filter(|t| t.is_string()) {
        let a = super::tag_stats(ctx, &with(first, "tag", tag))?;
        let b = super::tag_stats(ctx, &with(second, "tag", tag))?;
        let d = |k: &str| match (a[k].as_f64(), b[k].as_f64()) {
            (Some(x), Some(y)) => json!(round(y - x, 3)),
            _ => Json::Null,
        };
        let dv = |k: &str| match (a[k]["value"].as_f64(), b[k]["value"].as_f64()) {
            (Some(x), Some(y)) => json!(round(y - x, 3)),
            _ => Json::Null,
        };
        return Ok(json!({ "tag": tag, "unit": a["unit"], "first": a, "second": b,
                          "change": { "mean": d("mean"), "min": dv("min"), "max": dv("max") } }));
    }
    let asset = args.get("asset").cloned().unwrap_or(Json::Null);
    let pick = |r: &Json| -> Json {
        match asset.as_str() {
            Some(id) => r["machines"].as_array().and_then(|m| m.iter().find(|m| m["asset"] == id)).cloned(),
            None => r["lines"].get(0).cloned(),
        }
        .unwrap_or(Json::Null)
    };
    let a_full = super::oee(ctx, first)?;
    let b_full = super::oee(ctx, second)?;
    let (a, b) = (pick(&a_full), pick(&b_full));
    let mut change = serde_json::Map::new();
    for k in ["oee_pct", "availability_pct", "performance_pct", "quality_pct", "good", "reject", "downtime_min"] {
        if let (Some(x), Some(y)) = (a[k].as_f64(), b[k].as_f64()) {
            change.insert(k.to_string(), json!(round(y - x, 2)));
        }
    }
    Ok(json!({ "asset": asset, "first": { "window": a_full["window"], "oee": a },
               "second": { "window": b_full["window"], "oee": b }, "change": change }))
}

/// One-minute means of a tag over `[from, to)`, by minute index.
fn minute_means(
    ctx: &ToolContext<'_>,
    tag: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Option<f64>>, ToolError> {
    let n = ((to - from) / MIN).max(1) as usize;
    let mut sum = vec![0.0; n];
    let mut cnt = vec![0u32; n];
    if let Some(id) = ctx.series_of(tag) {
        let p = ctx.store.range(id, from, to)?;
        for i in 0..p.len() {
            if let Some(v) = p.values.num(i) {
                let k = ((p.ts[i] - from) / MIN) as usize;
                if k < n {
                    sum[k] += v;
                    cnt[k] += 1;
                }
            }
        }
    }
    Ok(sum.iter().zip(&cnt).map(|(s, c)| (*c > 0).then(|| s / f64::from(*c))).collect())
}

/// Pearson correlation over the minutes both series have.
fn pearson(a: &[Option<f64>], b: &[Option<f64>]) -> Option<(f64, usize)> {
    let pairs: Vec<(f64, f64)> = a.iter().zip(b).filter_map(|(x, y)| Some(((*x)?, (*y)?))).collect();
    let n = pairs.len();
    if n < 5 {
        return None;
    }
    let (mx, my) = pairs.iter().fold((0.0, 0.0), |s, p| (s.0 + p.0, s.1 + p.1));
    let (mx, my) = (mx / n as f64, my / n as f64);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in &pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    (sxx > 1e-12 && syy > 1e-12).then(|| (sxy / (sxx * syy).sqrt(), n))
}

/// `correlated {event | tag + window, scope?, limit?}`: the numeric tags whose
/// one-minute means moved with the anomaly's tag (Pearson r over the window, strongest
/// first). With `event` (an anomaly or alarm id) the tag is the event's and the window
/// runs from 30 min before it to 5 min after; `scope` is `asset` (default: the tag's
/// machine) or `line` (every numeric tag).
pub fn correlated(ctx: &ToolContext<'_>, args: &Json) -> Result<Json, ToolError> {
    let bad = |m: String| ToolError::BadArgument { tool: "correlated", message: m };
    let (tag, from, to) = match args.get("event").and_then(Json::as_i64) {
        Some(id) => {
            let e = ctx.store.events().get(id)?.ok_or_else(|| bad(format!("no event {id}")))?;
            let tag = e.details["tag"]
                .as_str()
                .or_else(|| e.details["contributions"][0]["tag"].as_str())
                .ok_or_else(|| bad(format!("event {id} names no tag")))?
                .to_string();
            (tag, e.ts - 30 * MIN, e.ts + 5 * MIN)
        }
        None => {
            let tag = arg("correlated", args, "tag")?.to_string();
            let (from, to, _) = ctx.window("correlated", args, 1.0)?;
            (tag, from, to)
        }
    };
    let t = ctx.config.tag(&tag).ok_or_else(|| bad(format!("no tag `{tag}` in the configuration")))?;
    let line_wide = args.get("scope").and_then(Json::as_str) == Some("line");
    let limit = args.get("limit").and_then(Json::as_u64).unwrap_or(5).clamp(1, 20) as usize;
    let base = minute_means(ctx, &tag, from, to)?;
    let mut found = Vec::new();
    for other in
        ctx.config.tags.iter().filter(|o| {
            o.name != tag && o.value_type == crate::domain::ValueKind::F64 && (line_wide || o.asset == t.asset)
        })
    {
        if let Some((r, n)) = pearson(&base, &minute_means(ctx, &other.name, from, to)?) {
            found.push((other, r, n));
        }
    }
    found.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let list: Vec<Json> = found
        .iter()
        .take(limit)
        .map(|(o, r, n)| json!({ "tag": o.name, "unit": o.unit, "r": round(*r, 2), "minutes": n }))
        .collect();
    Ok(json!({ "tag": tag, "from": ctx.time(from), "to": ctx.time(to),
               "method": "Pearson r of one-minute means", "correlated": list }))
}

/// `maintenance_history {asset?, hours?}`: maintenance recorded (`linepilot maintenance
/// done`), newest first, over the last `hours` (default 30 days).
pub fn maintenance_history(ctx: &ToolContext<'_>, args: &Json) -> Result<Json, ToolError> {
    let asset = args.get("asset").and_then(Json::as_str).map(|a| ctx.asset("maintenance_history", a)).transpose()?;
    let hours = args.get("hours").and_then(Json::as_f64).filter(|h| *h > 0.0).unwrap_or(720.0);
    let q = EventQuery {
        from: Some(ctx.now - (hours * 3.6e12) as i64),
        to: Some(ctx.now + 1),
        asset: asset.map(|a| a.id.clone()),
        kinds: vec![EventKind::Audit],
        limit: None,
        newest_first: true,
    };
    let done: Vec<Json> = ctx
        .store
        .events()
        .query(&q)?
        .into_iter()
        .filter(|e| e.details.get("maintenance").is_some())
        .take(50)
        .map(|e| {
            json!({ "time": ctx.time(e.ts), "asset": e.asset, "action": e.details["maintenance"],
                    "failure_mode": e.details["failure_mode"], "run_hours": e.details["run_hours"],
                    "cycles": e.details["cycles"], "user": e.details["user"] })
        })
        .collect();
    Ok(json!({ "hours": hours, "done": done }))
}

#[cfg(test)]
mod tests {
    use super::pearson;

    #[test]
    fn pearson_of_aligned_minutes() {
        let a: Vec<Option<f64>> = (0..20).map(|i| Some(i as f64)).collect();
        let b: Vec<Option<f64>> = (0..20).map(|i| if i == 3 { None } else { Some(-2.0 * i as f64 + 1.0) }).collect();
        let (r, n) = pearson(&a, &b).expect("enough minutes");
        assert!((r + 1.0).abs() < 1e-12 && n == 19);
        let flat = vec![Some(1.0); 20];
        assert!(pearson(&a, &flat).is_none(), "a flat series has no correlation");
    }
}
