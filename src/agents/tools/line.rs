//! Tools about the machines and their tags: state, latest values, statistics,
//! events, and what the configuration says about an asset.

use serde_json::{json, Value as Json};

use super::{arg, round, ToolContext, ToolError};
use crate::analytics::state::LineState;
use crate::domain::{EventKind, Sample, Value};
use crate::store::events::EventQuery;

/// How far back the state tracker replays to find each machine's current state.
const STATE_LOOKBACK_NS: i64 = 24 * 3_600_000_000_000;

fn value_json(v: &Value) -> Json {
    match v {
        Value::F64(x) => json!(round(*x, 3)),
        Value::I64(x) => json!(x),
        Value::Bool(b) => json!(b),
        Value::Str(s) => json!(s),
    }
}

/// `line_state {asset?}`: each tracked machine's state, fault code and since when.
pub fn line_state(ctx: &ToolContext<'_>, args: &Json) -> Result<Json, ToolError> {
    let only = args.get("asset").and_then(Json::as_str).map(|a| ctx.asset("line_state", a)).transpose()?;
    let mut tracker = LineState::new(ctx.config, |t| ctx.series_of(t));
    let from = ctx.now - STATE_LOOKBACK_NS;
    let mut samples = Vec::new();
    for id in tracker.series() {
        let p = ctx.store.range(id, from, ctx.now + 1)?;
        for i in 0..p.len() {
            samples.push(Sample { series: id, ts: p.ts[i], value: p.values.get(i), quality: p.quality_at(i) });
        }
    }
    samples.sort_by_key(|s| s.ts);
    for s in &samples {
        tracker.observe(s);
    }
    tracker.flush();
    let mut machines = Vec::new();
    let assets: Vec<String> = tracker.assets().map(str::to_string).collect();
    for id in assets {
        if only.is_some_and(|a| a.id != id) {
            continue;
        }
        let name = ctx.config.assets.iter().find(|a| a.id == id).map_or(id.clone(), |a| a.name.clone());
        match tracker.current(&id) {
            Some((state, fault, since)) => {
                let mut m = json!({
                    "asset": id, "name": name, "state": state.as_str(),
                    "since": ctx.time(since),
                    "for_min": round((ctx.now - since).max(0) as f64 / 6e10, 1),
                });
                if let Some(c) = fault.filter(|c| *c != 0) {
                    m["fault_code"] = json!(c);
                }
                machines.push(m);
            }
            None => machines.push(
                json!({ "asset": id, "name": name, "state": "unknown", "note": "no state data in the last 24 h" }),
            ),
        }
    }
    Ok(json!({ "now": ctx.time(ctx.now), "machines": machines }))
}

fn tag<'a>(ctx: &ToolContext<'a>, tool: &'static str, args: &Json) -> Result<&'a crate::config::TagConfig, ToolError> {
    let name = arg(tool, args, "tag")?;
    ctx.config
        .tags
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ToolError::BadArgument { tool, message: format!("no tag `{name}` in the configuration") })
}

/// `tag_latest {tag}`: the latest value with unit, time and quality.
pub fn tag_latest(ctx: &ToolContext<'_>, args: &Json) -> Result<Json, ToolError> {
    let t = tag(ctx, "tag_latest", args)?;
    let latest = ctx.series_of(&t.name).and_then(|id| ctx.store.latest(&[id]).into_iter().next().flatten());
    Ok(match latest {
        Some(l) => json!({
            "tag": t.name, "description": t.description, "unit": t.unit,
            "value": value_json(&l.value), "time": ctx.time(l.ts), "quality": l.quality.to_string(),
            "age_s": round((ctx.now - l.ts).max(0) as f64 / 1e9, 1),
        }),
        None => json!({ "tag": t.name, "unit": t.unit, "value": null, "note": "no data stored for this tag" }),
    })
}

/// `tag_stats {tag, shift | from, to | hours}`: min and max with their times, mean,
/// first and last over a window (default the last hour).
pub fn tag_stats(ctx: &ToolContext<'_>, args: &Json) -> Result<Json, ToolError> {
    let t = tag(ctx, "tag_stats", args)?;
    let (from, to, shift) = ctx.window("tag_stats", args, 1.0)?;
    let mut out = json!({ "tag": t.name, "unit": t.unit, "from": ctx.time(from), "to": ctx.time(to) });
    if let Some(s) = shift {
        out["shift"] = json!(s);
    }
    let Some(id) = ctx.series_of(&t.name) else {
        out["note"] = json!("no data stored for this tag");
        return Ok(out);
    };
    let p = ctx.store.range(id, from, to)?;
    let vals: Vec<(i64, f64)> = (0..p.len()).filter_map(|i| p.values.num(i).map(|v| (p.ts[i], v))).collect();
    if vals.is_empty() {
        out["count"] = json!(0);
        out["note"] = json!("no numeric samples in the window");
        return Ok(out);
    }
    let (mut lo, mut hi) = (vals[0], vals[0]);
    let mut sum = 0.0;
    for &(ts, v) in &vals {
        if v < lo.1 {
            lo = (ts, v);
        }
        if v > hi.1 {
            hi = (ts, v);
        }
        sum += v;
    }
    let n = vals.len();
    let (first, last) = (vals[0], vals[n - 1]);
    out["count"] = json!(n);
    out["min"] = json!({ "value": round(lo.1, 3), "time": ctx.time(lo.0) });
    out["max"] = json!({ "value": round(hi.1, 3), "time": ctx.time(hi.0) });
    out["mean"] = json!(round(sum / n as f64, 3));
    out["first"] = json!({ "value": round(first.1, 3), "time": ctx.time(first.0) });
    out["last"] = json!({ "value": round(last.1, 3), "time": ctx.time(last.0) });
    out["change"] = json!(round(last.1 - first.1, 3));
    Ok(out)
}

/// `events {asset?, kinds?, shift | from, to | hours, limit?}`: events newest first
/// (default: alarms, anomalies, state changes and comms over the last 8 hours).
pub fn events(ctx: &ToolContext<'_>, args: &Json) -> Result<Json, ToolError> {
    let (from, to, shift) = ctx.window("events", args, 8.0)?;
    let asset = args.get("asset").and_then(Json::as_str).map(|a| ctx.asset("events", a)).transpose()?;
    let kinds = match args.get("kinds").and_then(Json::as_array) {
        Some(ks) => ks
            .iter()
            .map(|k| {
                k.as_str().and_then(|s| s.parse::<EventKind>().ok()).ok_or_else(|| ToolError::BadArgument {
                    tool: "events",
                    message: format!("unknown event kind {k}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![EventKind::Alarm, EventKind::Anomaly, EventKind::StateChange, EventKind::Comms],
    };
    let limit = args.get("limit").and_then(Json::as_u64).unwrap_or(20).clamp(1, 50) as usize;
    let q = EventQuery {
        from: Some(from),
        to: Some(to),
        asset: asset.map(|a| a.id.clone()),
        kinds,
        limit: Some(limit),
        newest_first: true,
    };
    let total = ctx.store.events().count(&EventQuery { limit: None, ..q.clone() })?;
    let list: Vec<Json> = ctx
        .store
        .events()
        .query(&q)?
        .into_iter()
        .map(|e| {
            let mut j = json!({
                "id": e.id, "time": ctx.time(e.ts), "kind": e.kind.as_str(),
                "asset": e.asset, "severity": e.severity, "message": e.message,
            });
            // The detail an explanation needs, without the bulk.
            for key in ["state", "previous", "fault_code", "tag", "value", "limit", "score", "contributions", "cause"] {
                if let Some(v) = e.details.get(key) {
                    j[key] = v.clone();
                }
            }
            j
        })
        .collect();
    let mut out = json!({ "from": ctx.time(from), "to": ctx.time(to), "total": total, "events": list });
    if let Some(s) = shift {
        out["shift"] = json!(s);
    }
    Ok(out)
}

/// `asset_info {asset}`: the configuration's description of a machine and its tags.
pub fn asset_info(ctx: &ToolContext<'_>, args: &Json) -> Result<Json, ToolError> {
    let a = ctx.asset("asset_info", arg("asset_info", args, "asset")?)?;
    let tags: Vec<Json> = ctx
        .config
        .tags
        .iter()
        .filter(|t| t.asset == a.id)
        .map(|t| json!({ "tag": t.name, "unit": t.unit, "description": t.description }))
        .collect();
    let mut out = json!({
        "asset": a.id, "name": a.name, "kind": a.kind, "line": a.line,
        "description": a.description, "ideal_rate_per_min": a.ideal_rate_per_min, "tags": tags,
    });
    if let Some(k) = ctx.config.asset_kind_of(&a.id) {
        let tag_of = |suffix: &str| {
            ctx.config
                .tags
                .iter()
                .find(|t| t.asset == a.id && crate::config::knowledge::tag_matches(&a.id, suffix, &t.name))
                .map(|t| t.name.clone())
        };
        out["kind_description"] = json!(k.description);
        out["failure_modes"] = k
            .failure_modes
            .iter()
            .map(|m| {
                json!({
                    "id": m.id, "name": m.name, "symptoms": m.symptoms,
                    "tags": m.tags.iter().filter_map(|s| tag_of(s)).collect::<Vec<_>>(),
                    "fault_codes": m.fault_codes, "causes": m.causes, "checks": m.checks, "parts": m.parts,
                    "failure_limit": m.failure_limit,
                })
            })
            .collect();
        out["service"] = k
            .services
            .iter()
            .map(|s| {
                json!({ "action": s.action, "every_hours": s.every_hours, "every_cycles": s.every_cycles,
                        "prevents": s.prevents, "parts": s.parts })
            })
            .collect();
        out["hours_tag"] = json!(k.hours_tag.as_deref().and_then(tag_of));
    }
    Ok(out)
}
