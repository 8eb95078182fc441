//! The anomaly explainer: for every anomaly and alarm event, what happened and
//! when, which tags took part and how they moved, what else happened on the
//! machine around it, the likely causes from the asset's maintenance manual
//! (`[[asset_kind]]` failure modes matched by tag and fault code) and the checks to
//! make. The explanation is stored with the event (event log `explanations`).
//!
//! Every number in the text comes from a tool result (the event itself, the tag's
//! statistics, the neighbouring events, the manual) and the reviewer checks it.

use serde::Serialize;
use serde_json::{json, Value as Json};

use super::review::{Review, Reviewer};
use super::tools::{self, round, ToolContext, ToolError, ToolOutput};
use crate::config::knowledge::{tag_matches, FailureModeConfig};
use crate::domain::{Event, EventKind};
use crate::store::events::{EventQuery, StoredExplanation};

const MIN: i64 = 60_000_000_000;
/// How far back a tag's movement is summarised before an event.
const LOOK_BACK: i64 = 30 * MIN;
/// At most this many contributing tags are summarised.
const MAX_TAGS: usize = 4;

/// A tag that took part in the event.
#[derive(Clone, Debug, Serialize)]
pub struct Contribution {
    /// The tag.
    pub tag: String,
    /// Its share of the episode's score, in per cent (anomaly episodes only).
    pub share_pct: Option<f64>,
}

/// A failure mode of the manual that fits the event.
#[derive(Clone, Debug, Serialize)]
pub struct LikelyCause {
    /// The failure mode's id.
    pub failure_mode: String,
    /// Its name.
    pub name: String,
    /// How well it fits: the contributing tags' shares it names, plus 2 for a fault code it raises.
    pub score: f64,
    /// What matched: tags and `fault_<code>`.
    pub matched: Vec<String>,
    /// The manual's root causes.
    pub causes: Vec<String>,
    /// The manual's checks.
    pub checks: Vec<String>,
    /// The manual's spare parts.
    pub parts: Vec<String>,
}

/// One event explained.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// The event's id.
    pub event_id: i64,
    /// The asset.
    pub asset: Option<String>,
    /// `anomaly` or `alarm`.
    pub kind: String,
    /// The event's time (local `HH:MM`, local and UTC).
    pub at: Json,
    /// The tags that took part.
    pub contributing: Vec<Contribution>,
    /// Failure modes that fit, best first.
    pub likely: Vec<LikelyCause>,
    /// The checks to make, best cause's first.
    pub checks: Vec<String>,
    /// The text a person reads.
    pub text: String,
    /// `template` or the model's name.
    pub written_by: String,
    /// The tool results the text rests on.
    pub facts: Vec<ToolOutput>,
    /// What the reviewer found.
    pub review: Review,
}

/// Whether the explainer writes about `e`: anomalies, and alarms as they activate
/// (or a fault alarm's code changes).
pub fn explainable(e: &Event) -> bool {
    match e.kind {
        EventKind::Anomaly => true,
        EventKind::Alarm => matches!(e.details["transition"].as_str(), Some("activated" | "code_changed")),
        _ => false,
    }
}

/// The tags an event is about, with their shares where the event gives them.
fn tags_of(e: &Event) -> Vec<Contribution> {
    let mut out: Vec<Contribution> = Vec::new();
    if let Some(cs) = e.details["contributions"].as_array() {
        let total: f64 = cs.iter().filter_map(|c| c["share"].as_f64()).sum();
        for c in cs {
            let Some(tag) = c["tag"].as_str() else { continue };
            let share = c["share"].as_f64().filter(|_| total > 0.0).map(|s| round(100.0 * s / total, 0));
            out.push(Contribution { tag: tag.to_string(), share_pct: share });
        }
    }
    if let Some(tag) = e.details["tag"].as_str() {
        if !out.iter().any(|c| c.tag == tag) {
            out.insert(0, Contribution { tag: tag.to_string(), share_pct: None });
        }
    }
    out
}

/// The machine fault code an event carries (a fault-code alarm's value).
fn fault_code(e: &Event) -> Option<i64> {
    (e.details["condition"] == "fault_code").then(|| e.details["value"].as_f64()).flatten().map(|v| v as i64)
}

/// The event as a fact: what the store holds, with shares in per cent.
fn event_fact(ctx: &ToolContext<'_>, e: &Event, contributing: &[Contribution]) -> ToolOutput {
    let mut details = serde_json::Map::new();
    for key in ["tag", "condition", "transition", "priority", "value", "unit", "limit", "baseline", "scale", "test"] {
        if let Some(v) = e.details.get(key).filter(|v| !v.is_null()) {
            details.insert(key.to_string(), v.clone());
        }
    }
    let mut result = json!({
        "id": e.id, "time": ctx.time(e.ts), "kind": e.kind.as_str(), "asset": e.asset,
        "severity": e.severity, "message": e.message, "details": details,
        "contributions": contributing,
    });
    if let Some(s) = e.details["started"].as_i64().filter(|s| *s != e.ts) {
        result["started"] = ctx.time(s);
    }
    ToolOutput { tool: "event".into(), args: json!({ "id": e.id }), result }
}

/// Ranks the failure modes of the asset's kind against the event's tags and code.
fn likely_causes(
    ctx: &ToolContext<'_>,
    asset: &str,
    contributing: &[Contribution],
    code: Option<i64>,
) -> Vec<LikelyCause> {
    let Some(kind) = ctx.config.asset_kind_of(asset) else { return Vec::new() };
    let n = contributing.len().max(1) as f64;
    let mut out: Vec<LikelyCause> = kind
        .failure_modes
        .iter()
        .filter_map(|m: &FailureModeConfig| {
            let mut score = 0.0;
            let mut matched = Vec::new();
            for c in contributing {
                if m.tags.iter().any(|s| tag_matches(asset, s, &c.tag)) {
                    score += c.share_pct.map_or(1.0 / n, |p| p / 100.0);
                    matched.push(c.tag.clone());
                }
            }
            if let Some(code) = code.filter(|c| m.fault_codes.contains(c)) {
                score += 2.0;
                matched.push(format!("fault_{code}"));
            }
            (score > 0.0).then(|| LikelyCause {
                failure_mode: m.id.clone(),
                name: m.name.clone(),
                score: round(score, 3),
                matched,
                causes: m.causes.clone(),
                checks: m.checks.clone(),
                parts: m.parts.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

fn s(v: &Json) -> &str {
    v.as_str().unwrap_or_default()
}

/// A number as a person reads it: at most 2 decimals, trailing zeros dropped.
fn num(v: f64) -> String {
    let s = format!("{:.2}", round(v, 2));
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Explains event `e` from the tools, with the template writer.
pub fn explain(ctx: &ToolContext<'_>, e: &Event) -> Result<Explanation, ToolError> {
    let contributing = tags_of(e);
    let asset =
        e.asset.clone().or_else(|| contributing.first().and_then(|c| ctx.config.tag(&c.tag)).map(|t| t.asset.clone()));
    let code = fault_code(e);
    let mut facts = vec![event_fact(ctx, e, &contributing)];
    if let Some(a) = &asset {
        if ctx.config.asset(a).is_some() {
            facts.push(tools::run(ctx, "asset_info", &json!({ "asset": a }))?);
        }
    }
    // How each tag moved up to the event (an episode: from before it began to its end).
    let start = e.details["started"].as_i64().unwrap_or(e.ts).min(e.ts);
    let (from, to) = (start - LOOK_BACK, e.ts + 1);
    let range = |ts| crate::api::query::format_time(ts);
    let mut moved = Vec::new();
    for c in contributing.iter().take(MAX_TAGS) {
        if ctx.config.tag(&c.tag).is_none() || c.tag.ends_with(".fault_code") || c.tag.ends_with(".state") {
            continue;
        }
        let out = tools::run(ctx, "tag_stats", &json!({ "tag": c.tag, "from": range(from), "to": range(to) }))?;
        if out.result["count"].as_u64().unwrap_or(0) > 1 {
            moved.push(out.result.clone());
        }
        facts.push(out);
    }
    // The machine's other tags that moved with it (anomalies only: an alarm's cause is its limit).
    let mut moved_with = Vec::new();
    if e.kind == EventKind::Anomaly
        && e.id > 0
        && contributing.first().is_some_and(|c| ctx.config.tag(&c.tag).is_some())
    {
        let out = tools::run(ctx, "correlated", &json!({ "event": e.id, "limit": 3 }))?;
        for c in out.result["correlated"].as_array().into_iter().flatten() {
            if c["r"].as_f64().is_some_and(|r| r.abs() >= 0.8) && !contributing.iter().any(|k| k.tag == c["tag"]) {
                moved_with.push(format!("{} (r {})", s(&c["tag"]), num(c["r"].as_f64().unwrap_or_default())));
            }
        }
        facts.push(out);
    }
    // What else happened on the machine around it.
    let around = match &asset {
        Some(a) if ctx.config.asset(a).is_some() => {
            let out = tools::run(
                ctx,
                "events",
                &json!({ "asset": a, "from": range(e.ts - 15 * MIN), "to": range(e.ts + 5 * MIN),
                         "kinds": ["alarm", "anomaly", "state_change"], "limit": 12 }),
            )?;
            let list: Vec<Json> = out.result["events"]
                .as_array()
                .map(|l| l.iter().filter(|x| x["id"] != json!(e.id)).cloned().collect())
                .unwrap_or_default();
            facts.push(out);
            list
        }
        _ => Vec::new(),
    };
    let likely = asset.as_deref().map(|a| likely_causes(ctx, a, &contributing, code)).unwrap_or_default();

    // The text.
    let name = asset.as_deref().and_then(|a| ctx.config.asset(a)).map_or("The line", |a| a.name.as_str());
    let at = ctx.hhmm(e.ts);
    let mut lines = vec![format!("{name}, {at}: {}.", e.message.trim_end_matches('.'))];
    let shares: Vec<String> = contributing
        .iter()
        .filter_map(|c| c.share_pct.map(|p| format!("{} {} %", c.tag, num(p))))
        .take(MAX_TAGS)
        .collect();
    if shares.len() > 1 {
        lines.push(format!("Tags that took part: {}.", shares.join(", ")));
    }
    for m in &moved {
        let unit = m["unit"].as_str().filter(|u| !u.is_empty()).map(|u| format!(" {u}")).unwrap_or_default();
        lines.push(format!(
            "{} from {} to {}: {}{unit} to {}{unit}, highest {}{unit} at {}, lowest {}{unit} at {}.",
            m["tag"].as_str().unwrap_or_default(),
            m["from"]["at"].as_str().unwrap_or_default(),
            m["to"]["at"].as_str().unwrap_or_default(),
            num(m["first"]["value"].as_f64().unwrap_or_default()),
            num(m["last"]["value"].as_f64().unwrap_or_default()),
            num(m["max"]["value"].as_f64().unwrap_or_default()),
            m["max"]["time"]["at"].as_str().unwrap_or_default(),
            num(m["min"]["value"].as_f64().unwrap_or_default()),
            m["min"]["time"]["at"].as_str().unwrap_or_default(),
        ));
    }
    if !moved_with.is_empty() {
        lines.push(format!("Moved with it on this machine: {}.", moved_with.join(", ")));
    }
    let mut near: Vec<String> = around
        .iter()
        .rev()
        .take(4)
        .map(|x| {
            format!("{} {}", x["time"]["at"].as_str().unwrap_or_default(), x["message"].as_str().unwrap_or_default())
        })
        .collect();
    near.dedup();
    if !near.is_empty() {
        lines.push(format!("Around it on this machine: {}.", near.join("; ")));
    }
    if e.details["condition"] == "comms_loss" {
        lines.push(
            "The device stopped answering: check its network link, the switch on the way and its power supply."
                .to_string(),
        );
    }
    let mut checks: Vec<String> = Vec::new();
    match likely.first() {
        Some(best) => {
            lines.push(format!("Likely cause: {} (it shows in {}).", best.name, best.matched.join(", ")));
            if !best.causes.is_empty() {
                lines.push(format!("Possible root causes: {}.", best.causes.join("; ")));
            }
            checks.extend(best.checks.iter().cloned());
            if !checks.is_empty() {
                let numbered: Vec<String> =
                    checks.iter().enumerate().map(|(i, c)| format!("({}) {c}", i + 1)).collect();
                lines.push(format!("Checks: {}.", numbered.join("; ")));
            }
            if !best.parts.is_empty() {
                lines.push(format!("Parts to have ready: {}.", best.parts.join(", ")));
            }
            let others: Vec<&str> = likely.iter().skip(1).take(2).map(|l| l.name.as_str()).collect();
            if !others.is_empty() {
                lines.push(format!("Also possible: {}.", others.join(", ")));
            }
        }
        None if e.details["condition"] != "comms_loss" => {
            let kind = asset.as_deref().and_then(|a| ctx.config.asset(a)).map_or("this machine", |a| a.kind.as_str());
            lines.push(format!(
                "No failure mode in the manual of {kind} names these tags: check the sensor first, then the process around it."
            ));
        }
        None => {}
    }
    // Numbered checks ("(1)") are list marks, not claims: they are in the question.
    let marks: String = (1..=checks.len()).map(|i| format!("({i}) ")).collect();
    let reviewer = Reviewer::new(&facts, &marks, ctx.config);
    let text = lines.join("\n");
    let review = reviewer.review(&text);
    let text = if review.passed() { text } else { review.kept.clone() };
    Ok(Explanation {
        event_id: e.id,
        asset,
        kind: e.kind.as_str().to_string(),
        at: ctx.time(e.ts),
        contributing,
        likely,
        checks,
        text,
        written_by: "template".into(),
        facts,
        review,
    })
}

/// The explanation as the event log keeps it.
pub fn to_stored(x: &Explanation, written_at: i64) -> StoredExplanation {
    StoredExplanation {
        event_id: x.event_id,
        written_at,
        written_by: x.written_by.clone(),
        text: x.text.clone(),
        details: json!({
            "asset": x.asset, "kind": x.kind, "at": x.at, "contributing": x.contributing,
            "likely": x.likely, "checks": x.checks, "review": x.review,
            "facts": x.facts.iter().map(|f| json!({ "tool": f.tool, "args": f.args })).collect::<Vec<_>>(),
        }),
    }
}

/// Explains and stores every explainable event in `[from, to)` that has no
/// explanation yet (at most `limit`, oldest first); returns the explanations.
pub fn explain_pending(ctx: &ToolContext<'_>, from: i64, to: i64, limit: usize) -> Result<Vec<Explanation>, ToolError> {
    let q = EventQuery {
        from: Some(from),
        to: Some(to),
        kinds: vec![EventKind::Anomaly, EventKind::Alarm],
        limit: None,
        ..Default::default()
    };
    let mut out = Vec::new();
    for e in ctx.store.events().unexplained(&q)?.into_iter().filter(explainable).take(limit) {
        let x = explain(ctx, &e)?;
        ctx.store.events().put_explanation(&to_stored(&x, crate::domain::now_ns()))?;
        out.push(x);
    }
    Ok(out)
}

/// How often the daemon looks for new events to explain.
const EXPLAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The explanation as published on MQTT.
pub fn payload(x: &Explanation) -> Json {
    json!({
        "event_id": x.event_id, "asset": x.asset, "kind": x.kind, "at": x.at, "text": x.text,
        "likely": x.likely.iter().map(|l| json!({ "failure_mode": l.failure_mode, "name": l.name, "score": l.score })).collect::<Vec<_>>(),
        "checks": x.checks, "written_by": x.written_by,
    })
}

/// The daemon's explainer: every few seconds, explains the anomaly and alarm events
/// of the last hour that have none yet, until `stop` turns true; with `[agents]
/// publish`, publishes each explanation (QoS 1) to `<topic>/<asset>/explanation` on
/// that source's broker.
pub async fn run(
    store: std::sync::Arc<crate::store::Store>,
    config: std::sync::Arc<crate::config::Config>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let calendar = match crate::config::Calendar::new(&config) {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => {
            tracing::warn!(error = %e, "No anomaly explainer: the shift calendar cannot be built");
            return;
        }
    };
    let mut link = config.agents.publish.as_ref().and_then(|p| match config.source(&p.source) {
        Some(crate::config::SourceConfig::Mqtt(m)) => match crate::ingest::mqtt::publisher(m, "agents") {
            Ok(l) => Some((l, p.topic.clone())),
            Err(e) => {
                tracing::warn!(error = %e, source = %p.source, "Explanations will not be published");
                None
            }
        },
        _ => None,
    });
    let since = crate::domain::now_ns() - 60 * MIN;
    let mut tick = tokio::time::interval(EXPLAIN_EVERY);
    loop {
        let polled = async {
            match link.as_mut() {
                Some((l, _)) => l.poll().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            ev = polled => {
                if let Err(e) = ev {
                    tracing::debug!(error = %e, "Explanation publisher not connected; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        if *stop.borrow() {
            break;
        }
        let (s, c, cal) = (store.clone(), config.clone(), calendar.clone());
        let done = tokio::task::spawn_blocking(move || {
            let now = crate::domain::now_ns();
            let ctx = ToolContext { store: &s, config: &c, calendar: &cal, now };
            explain_pending(&ctx, since, now + 1, 50)
        })
        .await;
        match done {
            Ok(Ok(xs)) => {
                if !xs.is_empty() {
                    tracing::info!(explained = xs.len(), "Events explained");
                }
                if let Some((l, topic)) = &link {
                    for x in &xs {
                        let t = format!("{topic}/{}/explanation", x.asset.as_deref().unwrap_or("line"));
                        if let Err(e) = l.publish_at_least_once(t, payload(x).to_string().into_bytes()) {
                            tracing::warn!(error = %e, event = x.event_id, "Explanation not published");
                        }
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "The anomaly explainer failed; retrying"),
            Err(e) => tracing::warn!(error = %e, "The anomaly explainer task failed"),
        }
    }
    if let Some((l, _)) = &link {
        l.disconnect();
    }
}
