//! The shift report writer: at the end of each shift in the calendar (and on
//! demand, `linepilot report --shift 2026-11-28/A`) it gathers the shift's facts
//! with the tools — output per hour against the target, OEE with availability,
//! performance and quality, downtime causes and stops, alarms and anomalies with
//! the explainer's explanations, quality, energy, data gaps, open maintenance
//! items — and writes them as Markdown and as one self-contained HTML file with
//! SVG charts. The handover note is the model's when one is given (reviewed like
//! every agent text), else the template's; every number in the report is checked
//! by the reviewer against the facts, which are listed at the end.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value as Json};

use super::ask::ModelWriter;
use super::review::{Review, Reviewer};
use super::tools::{self, round, ToolContext, ToolError, ToolOutput};
use crate::domain::{EventKind, Timestamp};
use crate::llm::ChatMessage;
use crate::store::events::EventQuery;

const SECOND: i64 = 1_000_000_000;
const HOUR: i64 = 3600 * SECOND;
/// A source silent this long (no sample from any of its regular tags) is a data gap.
const GAP: i64 = 30 * SECOND;
/// Trends shown as charts: the tags with the most alarms and anomalies, at most this many.
const TRENDS: usize = 4;

/// A table of a section.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
}

/// A chart of a section (drawn as SVG in the HTML report).
#[derive(Clone, Debug, Serialize)]
pub enum Chart {
    /// Bars per label, with an optional target line.
    Bars {
        /// Title.
        title: String,
        /// Unit of the values.
        unit: String,
        /// Bar labels.
        labels: Vec<String>,
        /// Bar values.
        values: Vec<f64>,
        /// A horizontal target line.
        target: Option<f64>,
    },
    /// Groups of bars (e.g. OEE, A, P, Q per machine), values in per cent.
    Grouped {
        /// Title.
        title: String,
        /// Group labels.
        labels: Vec<String>,
        /// (series name, value per group).
        series: Vec<(String, Vec<f64>)>,
    },
    /// A Pareto chart: bars longest first with the cumulative share as a line.
    Pareto {
        /// Title.
        title: String,
        /// Causes.
        labels: Vec<String>,
        /// Minutes per cause.
        minutes: Vec<f64>,
    },
    /// A time series with its alarm limits.
    Trend {
        /// Title.
        title: String,
        /// Unit.
        unit: String,
        /// (UTC ns, value), averaged per interval.
        points: Vec<(Timestamp, f64)>,
        /// (name, value) of limits to draw.
        limits: Vec<(String, f64)>,
        /// Window start and end, UTC ns.
        from: Timestamp,
        /// Window end.
        to: Timestamp,
    },
}

/// One section of the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// Paragraphs of text.
    pub paragraphs: Vec<String>,
    /// A table.
    pub table: Option<Table>,
    /// Charts.
    pub charts: Vec<Chart>,
}

/// A written shift report.
#[derive(Clone, Debug, Serialize)]
pub struct ShiftReport {
    /// The shift, `2026-11-28/A`.
    pub shift: String,
    /// Its start and end (local and UTC).
    pub window: Json,
    /// When it was written.
    pub generated_at: Json,
    /// Who wrote the handover note: `template` or the model's name (and why not, if it was rejected).
    pub written_by: String,
    /// The handover note.
    pub handover: String,
    /// The sections.
    pub sections: Vec<Section>,
    /// The facts it rests on.
    pub facts: Vec<ToolOutput>,
    /// The reviewer's check of the whole text.
    pub review: Review,
    /// Faults, alarms and anomalies that had an explanation.
    pub explained_events: usize,
}

fn pct(v: &Json) -> String {
    v.as_f64().map_or_else(|| "n/a".to_string(), |x| format!("{x}"))
}

fn n(v: &Json) -> String {
    match v {
        Json::Number(x) => x.to_string(),
        Json::Null => "n/a".into(),
        other => other.as_str().unwrap_or_default().to_string(),
    }
}

fn s(v: &Json) -> &str {
    v.as_str().unwrap_or_default()
}

/// A derived fact: numbers computed from tool results by a stated rule.
fn derived(rule: &str, result: Json) -> ToolOutput {
    ToolOutput { tool: "derived".into(), args: json!({ "rule": rule }), result }
}

/// Writes the report of shift `which` ("last", "current" or a label such as
/// `2026-11-28/A`). `progress(step, fraction)` is called as each part is gathered;
/// with `model`, the model writes the handover note.
pub fn write(
    ctx: &ToolContext<'_>,
    which: &str,
    mut model: Option<(&str, &mut ModelWriter<'_>)>,
    mut progress: impl FnMut(&str, f64),
) -> Result<ShiftReport, ToolError> {
    let w = ctx.shift("report", which)?;
    let label = w.label.clone();
    let end = w.end.min(ctx.now.max(w.start + 1));
    let mut facts: Vec<ToolOutput> = Vec::new();
    let mut sections: Vec<Section> = Vec::new();
    let shift_arg = json!({ "shift": label });
    let line = ctx.config.lines.first();
    let line_name = line.map_or("the line", |l| l.name.as_str());

    // OEE and output.
    progress("OEE", 0.05);
    let oee = tools::run(ctx, "oee", &shift_arg)?;
    let line_oee = oee.result["lines"].get(0).cloned().unwrap_or(Json::Null);
    let key = s(&line_oee["key_asset"]).to_string();
    let good = line_oee["good"].as_f64();
    let reject = line_oee["reject"].as_f64();
    let target = ctx.config.shifts.iter().find(|c| c.name == w.name).and_then(|c| c.target);
    let planned_h = oee.result["window"]["planned_min"].as_f64().unwrap_or(0.0) / 60.0;
    let attainment = good.zip(target).map(|(g, t)| round(100.0 * g / t, 1));
    let reject_pct = good.zip(reject).map(|(g, r)| if g + r > 0.0 { round(100.0 * r / (g + r), 2) } else { 0.0 });
    facts.push(oee.clone());
    let generated = ctx.time(crate::domain::now_ns().min(ctx.now.max(w.end)));
    facts.push(derived(
        "attainment = good / target; reject rate = reject / (good + reject); target per hour = target / shift hours; \
         generated = when the report was written",
        json!({ "target": target, "attainment_pct": attainment, "reject_rate_pct": reject_pct,
                "target_per_hour": target.map(|t| round(t * HOUR as f64 / (w.end - w.start) as f64, 0)),
                "generated": generated, "shift_hours": round((w.end - w.start) as f64 / HOUR as f64, 1),
                "planned_hours": round(planned_h, 1) }),
    ));

    // Output per hour.
    progress("output per hour", 0.15);
    let mut hours = Vec::new();
    let mut t = w.start;
    while t < end {
        let h_end = (t + HOUR).min(end);
        let range = |ts| crate::api::query::format_time(ts);
        let mut o = tools::run(ctx, "oee", &json!({ "from": range(t), "to": range(h_end) }))?;
        if let Some(obj) = o.result.as_object_mut() {
            obj.remove("machines");
        }
        hours.push(o);
        t = h_end;
    }
    let target_per_hour = target.map(|t| round(t * HOUR as f64 / (w.end - w.start) as f64, 0));
    let mut out_table = Table {
        header: ["hour", "good", "reject", "OEE %", "availability %"].map(String::from).to_vec(),
        rows: Vec::new(),
    };
    let (mut labels, mut values) = (Vec::new(), Vec::new());
    for h in &hours {
        let l = &h.result["lines"][0];
        let span = format!("{}–{}", s(&h.result["window"]["from"]["at"]), s(&h.result["window"]["to"]["at"]));
        out_table.rows.push(vec![
            span,
            n(&l["good"]),
            n(&l["reject"]),
            pct(&l["oee_pct"]),
            pct(&l["availability_pct"]),
        ]);
        labels.push(s(&h.result["window"]["from"]["at"]).to_string());
        values.push(l["good"].as_f64().unwrap_or(0.0));
    }
    facts.extend(hours);
    let mut output = Section { title: "Output against target".into(), ..Default::default() };
    output.paragraphs.push(match (good, target) {
        (Some(g), Some(t)) => format!(
            "{line_name} ({key}) made {g} good units against a target of {t}: {}% of target, in {} planned hours.",
            attainment.unwrap_or_default(),
            round(planned_h, 1)
        ),
        (Some(g), None) => format!("{line_name} ({key}) made {g} good units; the shift has no target in the calendar."),
        _ => format!("{line_name} has no counters for its key machine: no output figures."),
    });
    if let (Some(r), Some(p)) = (reject, reject_pct) {
        output.paragraphs.push(format!("Rejects at {key}: {r} ({p}% of the units made)."));
    }
    output.charts.push(Chart::Bars {
        title: format!("Good units per hour at {key}"),
        unit: "units".into(),
        labels,
        values,
        target: target_per_hour,
    });
    output.table = Some(out_table);
    sections.push(output);

    // OEE per machine.
    let mut oee_sec = Section { title: "OEE".into(), ..Default::default() };
    oee_sec.paragraphs.push(format!(
        "Line OEE (its key machine, {key}): {}% = availability {}% × performance {}% × quality {}%.",
        pct(&line_oee["oee_pct"]),
        pct(&line_oee["availability_pct"]),
        pct(&line_oee["performance_pct"]),
        pct(&line_oee["quality_pct"])
    ));
    let mut t = Table {
        header: [
            "machine",
            "OEE %",
            "availability %",
            "performance %",
            "quality %",
            "good",
            "reject",
            "downtime min",
            "failures",
        ]
        .map(String::from)
        .to_vec(),
        rows: Vec::new(),
    };
    let mut g_labels = Vec::new();
    let mut series: Vec<(String, Vec<f64>)> =
        ["OEE", "availability", "performance", "quality"].iter().map(|s| (s.to_string(), Vec::new())).collect();
    for m in oee.result["machines"].as_array().into_iter().flatten() {
        t.rows.push(vec![
            s(&m["asset"]).to_string(),
            pct(&m["oee_pct"]),
            pct(&m["availability_pct"]),
            pct(&m["performance_pct"]),
            pct(&m["quality_pct"]),
            n(&m["good"]),
            n(&m["reject"]),
            n(&m["downtime_min"]),
            n(&m["failures"]),
        ]);
        if m["oee_pct"].is_number() {
            g_labels.push(s(&m["asset"]).to_string());
            for (k, key) in ["oee_pct", "availability_pct", "performance_pct", "quality_pct"].iter().enumerate() {
                series[k].1.push(m[*key].as_f64().unwrap_or(0.0));
            }
        }
    }
    oee_sec.table = Some(t);
    oee_sec.charts.push(Chart::Grouped {
        title: "OEE, availability, performance and quality per machine (%)".into(),
        labels: g_labels,
        series,
    });
    sections.push(oee_sec);

    // Downtime.
    progress("downtime", 0.3);
    let down = tools::run(ctx, "downtime", &shift_arg)?;
    let mut causes: Vec<(String, String, f64, u64)> = Vec::new();
    let mut stops = Table {
        header: ["machine", "from", "to", "minutes", "state", "cause"].map(String::from).to_vec(),
        rows: Vec::new(),
    };
    for m in down.result["machines"].as_array().into_iter().flatten() {
        for c in m["causes"].as_array().into_iter().flatten() {
            causes.push((
                s(&m["asset"]).to_string(),
                s(&c["cause"]).to_string(),
                c["minutes"].as_f64().unwrap_or(0.0),
                c["stops"].as_u64().unwrap_or(0),
            ));
        }
        for st in m["stops"].as_array().into_iter().flatten() {
            if st["minutes"].as_f64().unwrap_or(0.0) >= 1.0 {
                stops.rows.push(vec![
                    s(&m["asset"]).to_string(),
                    s(&st["from"]["at"]).to_string(),
                    s(&st["to"]["at"]).to_string(),
                    n(&st["minutes"]),
                    s(&st["state"]).to_string(),
                    s(&st["cause"]).to_string(),
                ]);
            }
        }
    }
    causes.sort_by(|a, b| b.2.total_cmp(&a.2));
    let mut down_sec = Section { title: "Downtime".into(), ..Default::default() };
    let top: Vec<String> = causes
        .iter()
        .take(5)
        .map(|(a, c, m, k)| format!("{a} {c}: {m} min in {k} stop{}", if *k == 1 { "" } else { "s" }))
        .collect();
    if top.is_empty() {
        down_sec.paragraphs.push("No downtime in planned production time.".into());
    } else {
        down_sec.paragraphs.push(format!("Top downtime causes: {}.", top.join("; ")));
        down_sec.paragraphs.push(
            "Starved and blocked time is the knock-on of a stop elsewhere on the line; every stop of a minute or more is listed below."
                .into(),
        );
    }
    down_sec.charts.push(Chart::Pareto {
        title: "Downtime by cause (minutes)".into(),
        labels: causes.iter().take(10).map(|(a, c, _, _)| format!("{a} {c}")).collect(),
        minutes: causes.iter().take(10).map(|c| c.2).collect(),
    });
    down_sec.table = Some(stops);
    facts.push(down);
    sections.push(down_sec);

    // Alarms and anomalies, with their explanations.
    progress("alarms and anomalies", 0.45);
    let q = EventQuery {
        from: Some(w.start),
        to: Some(end),
        kinds: vec![EventKind::Alarm, EventKind::Anomaly],
        ..Default::default()
    };
    let events = ctx.store.events().query(&q)?;
    let mut alarm_rows = Table {
        header: ["time", "alarm", "priority", "value", "likely cause"].map(String::from).to_vec(),
        rows: Vec::new(),
    };
    let mut alarm_facts = Vec::new();
    let mut by_tag: std::collections::BTreeMap<String, usize> = Default::default();
    let mut explained = 0;
    // (asset, likely failure mode name) of each alarm that has one.
    let mut alarm_causes: Vec<(String, String, String)> = Vec::new();
    // Anomalies: one entry per (machine, likely failure mode), the first explanation shown.
    let mut anomaly_groups: Vec<(String, String, Vec<String>, String)> = Vec::new();
    let mut unmatched: std::collections::BTreeMap<String, usize> = Default::default();
    for e in &events {
        if let Some(tag) = e.details["tag"].as_str() {
            *by_tag.entry(tag.to_string()).or_default() += 1;
        }
        if !super::explain::explainable(e) {
            continue;
        }
        let x = ctx.store.events().explanation(e.id)?;
        let likely = x.as_ref().and_then(|x| {
            x.details["likely"].get(0).map(|l| (s(&l["failure_mode"]).to_string(), s(&l["name"]).to_string()))
        });
        if x.is_some() {
            explained += 1;
        }
        let at = ctx.hhmm(e.ts);
        let asset = e.asset.clone().unwrap_or_default();
        match e.kind {
            EventKind::Alarm => {
                if let Some(l) = &likely {
                    alarm_causes.push((asset.clone(), l.0.clone(), l.1.clone()));
                }
                alarm_rows.rows.push(vec![
                    at.clone(),
                    e.message.clone(),
                    s(&e.details["priority"]).to_string(),
                    n(&e.details["value"]),
                    likely.as_ref().map(|l| l.1.clone()).unwrap_or_default(),
                ]);
                alarm_facts.push(json!({ "id": e.id, "time": ctx.time(e.ts), "message": e.message,
                    "value": e.details["value"], "priority": e.details["priority"],
                    "explanation": x.as_ref().map(|x| x.text.clone()) }));
            }
            _ => match likely {
                Some((mode, name)) => {
                    match anomaly_groups.iter_mut().find(|g| g.0 == asset && g.1 == mode) {
                        Some(g) => g.2.push(at),
                        None => {
                            let full = x.as_ref().map(|x| x.text.clone()).unwrap_or_default();
                            // The event, the likely cause and the checks; the rest is in the explanation.
                            let text: Vec<&str> = full
                                .lines()
                                .enumerate()
                                .filter(|(i, l)| *i == 0 || l.starts_with("Likely cause") || l.starts_with("Checks"))
                                .map(|(_, l)| l)
                                .collect();
                            let text = text.join(" ");
                            alarm_facts.push(json!({ "id": e.id, "time": ctx.time(e.ts), "message": e.message,
                                "explanation": text }));
                            anomaly_groups.push((asset, mode, vec![at], format!("{name}. {text}")));
                        }
                    }
                }
                None => *unmatched.entry(asset).or_default() += 1,
            },
        }
    }
    facts.push(ToolOutput {
        tool: "events".into(),
        args: json!({ "shift": label, "kinds": ["alarm", "anomaly"], "explained": true }),
        result: json!({ "total": events.len(), "explained": explained, "events": alarm_facts,
                        "unmatched_by_asset": unmatched }),
    });
    let mut alarm_sec = Section { title: "Alarms".into(), ..Default::default() };
    let activations = alarm_rows.rows.len();
    alarm_sec.paragraphs.push(if activations == 0 {
        "No alarm activated in the shift.".into()
    } else {
        format!("{activations} alarm activations; each with the explainer's likely cause where the manual has one.")
    });
    alarm_sec.table = Some(alarm_rows);
    sections.push(alarm_sec);
    let mut anomaly_sec = Section { title: "Anomalies and their explanations".into(), ..Default::default() };
    // Anomalies whose likely cause an alarm on the same machine confirms come first,
    // then the most frequent; only the first few are given in full.
    let confirmed =
        |g: &(String, String, Vec<String>, String)| alarm_causes.iter().any(|(a, m, _)| *a == g.0 && *m == g.1);
    anomaly_groups.sort_by(|a, b| confirmed(b).cmp(&confirmed(a)).then(b.2.len().cmp(&a.2.len())));
    let in_full = anomaly_groups.iter().filter(|g| confirmed(g)).count().max(4);
    for g in anomaly_groups.iter().take(in_full) {
        let (asset, _, times, text) = g;
        let when = if times.len() == 1 {
            format!("at {}", times[0])
        } else {
            format!("{} times, first at {}", times.len(), times[0])
        };
        let tag = if confirmed(g) { "confirmed by an alarm" } else { "anomalies only" };
        anomaly_sec.paragraphs.push(format!("**{asset}** ({when}; {tag}) — {}", text.replace('\n', " ")));
    }
    let rest: Vec<String> = anomaly_groups
        .iter()
        .skip(in_full)
        .map(|(a, m, times, _)| format!("{a} {} ({}×, first at {})", m.replace('_', " "), times.len(), times[0]))
        .collect();
    if !rest.is_empty() {
        anomaly_sec.paragraphs.push(format!(
            "Also matched to a failure mode by anomalies alone (no alarm; worth a look on the next round): {}.",
            rest.join("; ")
        ));
    }
    if !unmatched.is_empty() {
        let list: Vec<String> = unmatched.iter().map(|(a, k)| format!("{a} {k}")).collect();
        anomaly_sec.paragraphs.push(format!(
            "Anomaly events no failure mode of the manual explains (mostly the knock-on of stops): {}.",
            list.join(", ")
        ));
    }
    if anomaly_groups.is_empty() && unmatched.is_empty() {
        anomaly_sec.paragraphs.push("No anomaly in the shift.".into());
    }
    sections.push(anomaly_sec);

    // Quality and energy.
    progress("quality and energy", 0.6);
    let mut q_sec = Section { title: "Quality".into(), ..Default::default() };
    let mut q_rows = Vec::new();
    for m in oee.result["machines"].as_array().into_iter().flatten() {
        if let (Some(g), Some(r)) = (m["good"].as_f64(), m["reject"].as_f64()) {
            if g + r > 0.0 {
                q_rows.push((s(&m["asset"]).to_string(), r, round(100.0 * r / (g + r), 2)));
            }
        }
    }
    q_rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    if let Some(worst) = q_rows.first() {
        q_sec.paragraphs.push(format!("Highest reject rate: {} with {} rejects ({}%).", worst.0, worst.1, worst.2));
    }
    q_sec.table = Some(Table {
        header: ["machine", "rejects", "reject rate %"].map(String::from).to_vec(),
        rows: q_rows.iter().map(|(a, r, p)| vec![a.clone(), format!("{r}"), format!("{p}")]).collect(),
    });
    facts.push(derived(
        "reject rate per machine = reject / (good + reject) from the oee tool",
        json!(q_rows
            .iter()
            .map(|(a, r, p)| json!({ "asset": a, "reject": r, "reject_rate_pct": p }))
            .collect::<Vec<_>>()),
    ));
    sections.push(q_sec);

    let mut e_sec = Section { title: "Energy".into(), ..Default::default() };
    let mut e_rows = Vec::new();
    let mut total_kwh = 0.0;
    for tag in ctx.config.tags.iter().filter(|t| t.unit == "kWh") {
        let st = tools::run(ctx, "tag_stats", &json!({ "tag": tag.name, "shift": label }))?;
        if let Some(c) = st.result["change"].as_f64().filter(|c| *c >= 0.0) {
            if !tag.name.ends_with("_total") {
                total_kwh += c;
            }
            e_rows.push(vec![tag.asset.clone(), tag.name.clone(), format!("{c}")]);
        }
        facts.push(st);
    }
    let per_k = good.filter(|g| *g > 0.0).map(|g| round(total_kwh * 1000.0 / g, 2));
    facts.push(derived(
        "machines' energy = sum of their kWh meters' change over the shift (hall total excluded); per 1000 good = that / good × 1000",
        json!({ "machines_kwh": round(total_kwh, 1), "kwh_per_1000_good": per_k, "per": 1000 }),
    ));
    if e_rows.is_empty() {
        e_sec.paragraphs.push("No energy meters (kWh tags) are configured.".into());
    } else {
        e_sec.paragraphs.push(format!(
            "The machines used {} kWh{}.",
            round(total_kwh, 1),
            per_k.map(|k| format!(", {k} kWh per 1000 good units")).unwrap_or_default()
        ));
    }
    e_sec.table = Some(Table { header: ["machine", "meter", "kWh"].map(String::from).to_vec(), rows: e_rows });
    sections.push(e_sec);

    // Open maintenance items: the planner's work orders as of the report.
    progress("maintenance plan", 0.65);
    let plan = super::plan::plan(ctx, &super::plan::PlanOptions::default())?;
    let items = plan.open_items();
    let mut m_sec = Section { title: "Open maintenance items".into(), ..Default::default() };
    if items.is_empty() {
        m_sec.paragraphs.push("The maintenance planner has no work order due within its horizon.".into());
    } else {
        m_sec.paragraphs.push(format!(
            "{} work orders from the maintenance planner, most urgent first (`linepilot plan` has the evidence):",
            items.len()
        ));
        m_sec.table = Some(Table {
            header: ["rank", "machine", "action", "due by", "priority", "why"].map(String::from).to_vec(),
            rows: items
                .iter()
                .map(|w| {
                    vec![
                        w.rank.to_string(),
                        w.asset.clone(),
                        w.action.clone(),
                        s(&w.due_by["local"]).to_string(),
                        w.priority.as_str().to_string(),
                        w.why.clone(),
                    ]
                })
                .collect(),
        });
    }
    let open: Vec<String> = items
        .iter()
        .filter(|w| w.priority.as_str() == "high")
        .take(3)
        .map(|w| format!("{} {} (by {})", w.asset, w.action.to_lowercase(), s(&w.due_by["local"])))
        .collect();
    facts.push(plan.facts());
    sections.push(m_sec);

    // Data gaps per source.
    progress("data gaps", 0.7);
    let gaps = data_gaps(ctx, w.start, end)?;
    let mut gap_sec = Section { title: "Data gaps".into(), ..Default::default() };
    let list = gaps.result["gaps"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        gap_sec
            .paragraphs
            .push(format!("Every source delivered data throughout (no silence over {} s).", GAP / SECOND));
    } else {
        gap_sec.paragraphs.push(format!(
            "{} time(s) a source was silent for more than {} s (a comms loss or a stopped device):",
            list.len(),
            GAP / SECOND
        ));
        gap_sec.table = Some(Table {
            header: ["source", "from", "to", "seconds"].map(String::from).to_vec(),
            rows: list
                .iter()
                .map(|g| {
                    vec![
                        s(&g["source"]).to_string(),
                        s(&g["from"]["at"]).to_string(),
                        s(&g["to"]["at"]).to_string(),
                        n(&g["seconds"]),
                    ]
                })
                .collect(),
        });
    }
    facts.push(gaps);
    sections.push(gap_sec);

    // Key trends: the tags with the most alarms and anomalies.
    progress("trends", 0.8);
    let mut trend_sec = Section { title: "Key trends".into(), ..Default::default() };
    let mut ranked: Vec<(String, usize)> = by_tag
        .into_iter()
        .filter(|(t, _)| ctx.config.tag(t).is_some_and(|c| c.value_type == crate::domain::ValueKind::F64))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (tag, k) in ranked.into_iter().take(TRENDS) {
        let st = tools::run(ctx, "tag_stats", &json!({ "tag": tag, "shift": label }))?;
        let unit = s(&st.result["unit"]).to_string();
        trend_sec.paragraphs.push(format!(
            "{tag} ({k} events): from {} to {} {unit}, highest {} at {}, lowest {} at {}.",
            n(&st.result["first"]["value"]),
            n(&st.result["last"]["value"]),
            n(&st.result["max"]["value"]),
            s(&st.result["max"]["time"]["at"]),
            n(&st.result["min"]["value"]),
            s(&st.result["min"]["time"]["at"]),
        ));
        let limits = ctx
            .config
            .tag(&tag)
            .map(|c| {
                let a = ctx.config.tag_alarms(c);
                let mut l = Vec::new();
                if let Some(lim) = a.limits {
                    for (name, v) in [("HH", lim.hh), ("H", lim.h), ("L", lim.l), ("LL", lim.ll)] {
                        if let Some(v) = v {
                            l.push((name.to_string(), v));
                        }
                    }
                }
                l
            })
            .unwrap_or_default();
        trend_sec.charts.push(Chart::Trend {
            title: format!("{tag} ({unit})"),
            unit,
            points: averaged(ctx, &tag, w.start, end)?,
            limits,
            from: w.start,
            to: end,
        });
        facts.push(st);
    }
    if trend_sec.charts.is_empty() {
        trend_sec.paragraphs.push("No tag had an alarm or anomaly.".into());
    }
    sections.push(trend_sec);

    // The handover note.
    progress("handover note", 0.9);
    let top_loss = causes.iter().find(|c| c.1.starts_with("fault")).or(causes.first());
    let mut note = vec![match (good, target) {
        (Some(g), Some(t)) => format!(
            "Shift {label}: {g} good units against a target of {t} ({}%), line OEE {}%.",
            attainment.unwrap_or_default(),
            pct(&line_oee["oee_pct"])
        ),
        _ => format!("Shift {label}: line OEE {}%.", pct(&line_oee["oee_pct"])),
    }];
    if let Some((a, c, m, k)) = top_loss {
        note.push(format!("Biggest loss: {a} {c}, {m} min in {k} stop{}.", if *k == 1 { "" } else { "s" }));
    }
    if activations > 0 || !anomaly_groups.is_empty() {
        let mut pointed: Vec<String> = Vec::new();
        for (a, _, l) in &alarm_causes {
            let item = format!("{} on {a}", l.to_lowercase());
            if !pointed.contains(&item) {
                pointed.push(item);
            }
        }
        note.push(format!(
            "{activations} alarm activations{}; {} more likely causes from anomalies are listed under Anomalies.",
            if pointed.is_empty() { String::new() } else { format!(", pointing to {}", pointed.join(", ")) },
            anomaly_groups.len()
        ));
    }
    if !list.is_empty() {
        let g: Vec<String> = list.iter().map(|g| format!("{} at {}", s(&g["source"]), s(&g["from"]["at"]))).collect();
        note.push(format!("Data gaps: {}.", g.join(", ")));
    }
    if !open.is_empty() {
        note.push(format!("Open for the next shift: {}.", open.join("; ")));
    }
    let draft = note.join(" ");
    let reviewer = Reviewer::new(&facts, "", ctx.config);
    let mut handover = draft.clone();
    let mut written_by = "template".to_string();
    if let Some((name, write)) = model.as_mut() {
        // The model phrases the headline (output, OEE, biggest loss); the lists stay as written.
        let head = note.iter().take(2).cloned().collect::<Vec<_>>().join(" ");
        let tail = note.iter().skip(2).cloned().collect::<Vec<_>>().join(" ");
        let mut messages = vec![
            ChatMessage::system(
                "You write the first lines of the handover note a shift supervisor leaves for the next shift. Rewrite the FACTS as one or two plain sentences. Keep every number, machine name and cause exactly as written. Add no other numbers.",
            ),
            ChatMessage::user(format!("FACTS:\n{head}")),
        ];
        let required = super::ask::required_facts(&head, &reviewer);
        written_by = format!("template ({name}'s note rejected twice by the reviewer)");
        for attempt in 0..2 {
            let text = match write(&messages) {
                // A small model may echo the prompt's label first: that is scaffolding, not text.
                Ok(t) => t.trim().trim_start_matches("FACTS:").trim().to_string(),
                Err(e) => {
                    written_by = format!("template ({name} failed: {e})");
                    break;
                }
            };
            let r = reviewer.review(&text);
            let missing: Vec<&String> = required.iter().filter(|t| !text.contains(t.as_str())).collect();
            let echoed =
                text.is_empty() || text.contains("FACTS") || text.chars().count() > 2 * head.chars().count() + 80;
            if r.passed() && missing.is_empty() && !echoed {
                handover = if tail.is_empty() { text } else { format!("{text} {tail}") };
                written_by = (*name).to_string();
                break;
            }
            if attempt == 0 {
                let mut why = Vec::new();
                if !r.passed() {
                    why.push(format!("these are not in FACTS: {}", r.ungrounded.join(", ")));
                }
                if !missing.is_empty() {
                    why.push(format!(
                        "you left out: {}",
                        missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
                    ));
                }
                if echoed {
                    why.push("write the note itself, short".into());
                }
                messages.push(ChatMessage::assistant(text));
                messages.push(ChatMessage::user(format!(
                    "Rejected by the reviewer ({}). Rewrite the FACTS again.",
                    why.join("; ")
                )));
            }
        }
    }
    sections.insert(0, Section { title: "Handover".into(), paragraphs: vec![handover.clone()], ..Default::default() });

    progress("review", 0.97);
    let mut report = ShiftReport {
        shift: label,
        window: json!({ "from": ctx.time(w.start), "to": ctx.time(w.end) }),
        generated_at: generated,
        written_by,
        handover,
        sections,
        facts,
        review: Review::default(),
        explained_events: explained,
    };
    report.review = reviewer.review(&text_of(&report));
    progress("done", 1.0);
    Ok(report)
}

/// The report's text as the reviewer reads it: every paragraph and table cell.
pub fn text_of(r: &ShiftReport) -> String {
    let mut out = String::new();
    for s in &r.sections {
        for p in &s.paragraphs {
            out.push_str(p);
            out.push('\n');
        }
        if let Some(t) = &s.table {
            for row in &t.rows {
                out.push_str(&row.join(" ; "));
                out.push('\n');
            }
        }
    }
    out
}

/// Sources silent for more than [`GAP`]: per source, the merged sample times of its
/// regular tags (median interval ≤ 10 s), and every stretch without any.
fn data_gaps(ctx: &ToolContext<'_>, from: Timestamp, to: Timestamp) -> Result<ToolOutput, ToolError> {
    let mut gaps = Vec::new();
    for src in &ctx.config.sources {
        let mut times: Vec<Timestamp> = Vec::new();
        for t in ctx.config.tags.iter().filter(|t| t.source.as_deref() == Some(src.id())) {
            let Some(id) = ctx.series_of(&t.name) else { continue };
            let p = ctx.store.range(id, from, to)?;
            if p.len() < 3 {
                continue;
            }
            let mut d: Vec<i64> = p.ts.windows(2).map(|w| w[1] - w[0]).collect();
            d.sort_unstable();
            if d[d.len() / 2] <= 10 * SECOND {
                times.extend_from_slice(&p.ts);
            }
        }
        if times.is_empty() {
            continue;
        }
        times.sort_unstable();
        times.dedup();
        for pair in times.windows(2) {
            if pair[1] - pair[0] > GAP {
                gaps.push(json!({ "source": src.id(), "from": ctx.time(pair[0]), "to": ctx.time(pair[1]),
                                  "seconds": round((pair[1] - pair[0]) as f64 / 1e9, 0) }));
            }
        }
    }
    Ok(ToolOutput {
        tool: "data_gaps".into(),
        args: json!({ "from": ctx.time(from)["utc"], "to": ctx.time(to)["utc"], "min_seconds": GAP / SECOND }),
        result: json!({ "gaps": gaps }),
    })
}

/// A tag's values averaged over 5-minute intervals, for a trend chart.
fn averaged(
    ctx: &ToolContext<'_>,
    tag: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<(Timestamp, f64)>, ToolError> {
    let Some(id) = ctx.series_of(tag) else { return Ok(Vec::new()) };
    let p = ctx.store.range(id, from, to)?;
    let step = 5 * 60 * SECOND;
    let mut out: Vec<(Timestamp, f64)> = Vec::new();
    let (mut bucket, mut sum, mut k) = (i64::MIN, 0.0, 0u32);
    for i in 0..p.len() {
        let Some(v) = p.values.num(i) else { continue };
        let b = p.ts[i] - (p.ts[i] - from).rem_euclid(step);
        if b != bucket && k > 0 {
            out.push((bucket + step / 2, sum / k as f64));
            (sum, k) = (0.0, 0);
        }
        bucket = b;
        sum += v;
        k += 1;
    }
    if k > 0 {
        out.push((bucket + step / 2, sum / k as f64));
    }
    Ok(out)
}

/// The report as Markdown.
pub fn markdown(r: &ShiftReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Shift report {}\n", r.shift);
    let _ = writeln!(
        out,
        "{} to {} (plant time). Written {} by linepilot; handover note by {}.\n",
        s(&r.window["from"]["local"]),
        s(&r.window["to"]["local"]),
        s(&r.generated_at["local"]),
        r.written_by
    );
    for sec in &r.sections {
        let _ = writeln!(out, "## {}\n", sec.title);
        for p in &sec.paragraphs {
            let _ = writeln!(out, "{p}\n");
        }
        if let Some(t) = &sec.table {
            if !t.rows.is_empty() {
                let _ = writeln!(out, "| {} |", t.header.join(" | "));
                let _ = writeln!(out, "|{}", "---|".repeat(t.header.len()));
                for row in &t.rows {
                    let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
                    let _ = writeln!(out, "| {} |", cells.join(" | "));
                }
                out.push('\n');
            }
        }
    }
    let _ = writeln!(out, "## Facts used\n");
    for f in &r.facts {
        let _ = writeln!(out, "- `{}` {}", f.tool, f.args);
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `**bold**` of the Markdown paragraphs as HTML.
fn inline(s: &str) -> String {
    let e = esc(s);
    let mut out = String::new();
    for (i, part) in e.split("**").enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<b>{part}</b>");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// The report as one self-contained HTML page (inline CSS and SVG, no scripts, no links).
pub fn html(r: &ShiftReport, tz_label: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Shift report {}</title>\n<style>\
         body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222;line-height:1.45}}\
         h1{{font-size:1.6em}}h2{{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}}\
         table{{border-collapse:collapse;margin:.6em 0;font-size:.9em}}td,th{{border:1px solid #ccc;padding:.25em .5em;text-align:left}}\
         th{{background:#f3f3f3}}svg{{display:block;margin:.8em 0}}.meta{{color:#666}}details{{margin-top:1em}}\
         @media print{{details{{display:none}}}}</style></head><body>\n",
        esc(&r.shift)
    );
    let _ = writeln!(out, "<h1>Shift report {}</h1>", esc(&r.shift));
    let _ = writeln!(
        out,
        "<p class=\"meta\">{} to {} ({}). Written {} by linepilot; handover note by {}.</p>",
        esc(s(&r.window["from"]["local"])),
        esc(s(&r.window["to"]["local"])),
        esc(tz_label),
        esc(s(&r.generated_at["local"])),
        esc(&r.written_by)
    );
    for sec in &r.sections {
        let _ = writeln!(out, "<h2>{}</h2>", esc(&sec.title));
        for p in &sec.paragraphs {
            let _ = writeln!(out, "<p>{}</p>", inline(p));
        }
        for c in &sec.charts {
            out.push_str(&svg(c));
        }
        if let Some(t) = &sec.table {
            if !t.rows.is_empty() {
                out.push_str("<table><tr>");
                for h in &t.header {
                    let _ = write!(out, "<th>{}</th>", esc(h));
                }
                out.push_str("</tr>\n");
                for row in &t.rows {
                    out.push_str("<tr>");
                    for c in row {
                        let _ = write!(out, "<td>{}</td>", esc(c));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
        }
    }
    out.push_str("<details><summary>Facts used</summary><ul>\n");
    for f in &r.facts {
        let _ = writeln!(out, "<li><code>{}</code> {}</li>", esc(&f.tool), esc(&f.args.to_string()));
    }
    out.push_str("</ul></details>\n</body></html>\n");
    out
}

const W: f64 = 900.0;
const H: f64 = 240.0;
const PAD_L: f64 = 60.0;
const PAD_B: f64 = 50.0;
const PAD_T: f64 = 28.0;
const COLORS: [&str; 4] = ["#2f6db5", "#4caf50", "#ff9800", "#9c27b0"];

/// A "nice" axis maximum at or above `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn axis(out: &mut String, title: &str, max: f64, unit: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\">\
         <text x=\"{PAD_L}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{t}</text>",
        t = esc(title)
    );
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let y = H - PAD_B - (H - PAD_B - PAD_T) * i as f64 / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}{}</text>",
            W - 10.0,
            PAD_L - 4.0,
            y + 3.0,
            round(v, 2),
            if i == 4 { format!(" {}", esc(unit)) } else { String::new() }
        );
    }
}

fn y_of(v: f64, max: f64) -> f64 {
    H - PAD_B - (H - PAD_B - PAD_T) * (v / max).clamp(0.0, 1.0)
}

/// A chart as inline SVG.
pub fn svg(c: &Chart) -> String {
    let mut out = String::new();
    match c {
        Chart::Bars { title, unit, labels, values, target } => {
            let max = nice_max(values.iter().copied().fold(target.unwrap_or(0.0), f64::max));
            axis(&mut out, title, max, unit);
            let slot = (W - PAD_L - 10.0) / labels.len().max(1) as f64;
            for (i, (l, v)) in labels.iter().zip(values).enumerate() {
                let x = PAD_L + slot * i as f64 + slot * 0.15;
                let y = y_of(*v, max);
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}</title></rect>\
                     <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                    slot * 0.7,
                    (H - PAD_B - y).max(0.0),
                    COLORS[0],
                    esc(l),
                    v,
                    x + slot * 0.35,
                    H - PAD_B + 14.0,
                    esc(l)
                );
            }
            if let Some(t) = target {
                let y = y_of(*t, max);
                let _ = write!(
                    out,
                    "<line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d32f2f\" stroke-dasharray=\"6 4\"/>\
                     <text x=\"{}\" y=\"{:.1}\" font-size=\"10\" fill=\"#d32f2f\" text-anchor=\"end\">target {}</text>",
                    W - 10.0,
                    W - 12.0,
                    y - 4.0,
                    t
                );
            }
        }
        Chart::Grouped { title, labels, series } => {
            axis(&mut out, title, 100.0, "%");
            let slot = (W - PAD_L - 10.0) / labels.len().max(1) as f64;
            let bw = slot * 0.8 / series.len().max(1) as f64;
            for (i, l) in labels.iter().enumerate() {
                for (k, (name, vals)) in series.iter().enumerate() {
                    let v = vals.get(i).copied().unwrap_or(0.0);
                    let x = PAD_L + slot * i as f64 + slot * 0.1 + bw * k as f64;
                    let y = y_of(v, 100.0);
                    let _ = write!(
                        out,
                        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {} {v}%</title></rect>",
                        bw * 0.9,
                        (H - PAD_B - y).max(0.0),
                        COLORS[k % COLORS.len()],
                        esc(l),
                        esc(name)
                    );
                }
                let _ = write!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                    PAD_L + slot * (i as f64 + 0.5),
                    H - PAD_B + 14.0,
                    esc(l)
                );
            }
            for (k, (name, _)) in series.iter().enumerate() {
                let x = PAD_L + 120.0 * k as f64;
                let _ = write!(
                    out,
                    "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"10\">{}</text>",
                    H - 18.0,
                    COLORS[k % COLORS.len()],
                    x + 14.0,
                    H - 9.0,
                    esc(name)
                );
            }
        }
        Chart::Pareto { title, labels, minutes } => {
            let total: f64 = minutes.iter().sum::<f64>().max(1e-9);
            let max = nice_max(minutes.iter().copied().fold(0.0, f64::max));
            axis(&mut out, title, max, "min");
            let slot = (W - PAD_L - 10.0) / labels.len().max(1) as f64;
            let mut cum = 0.0;
            let mut pts = Vec::new();
            for (i, (l, m)) in labels.iter().zip(minutes).enumerate() {
                let x = PAD_L + slot * i as f64 + slot * 0.15;
                let y = y_of(*m, max);
                cum += m;
                pts.push(format!("{:.1},{:.1}", x + slot * 0.35, y_of(cum / total, 1.0)));
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {m} min</title></rect>\
                     <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"end\" transform=\"rotate(-30 {:.1} {:.1})\">{}</text>",
                    slot * 0.7,
                    (H - PAD_B - y).max(0.0),
                    COLORS[2],
                    esc(l),
                    x + slot * 0.35,
                    H - PAD_B + 12.0,
                    x + slot * 0.35,
                    H - PAD_B + 12.0,
                    esc(l)
                );
            }
            let _ = write!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"#333\" stroke-width=\"1.5\"><title>cumulative share</title></polyline>",
                pts.join(" ")
            );
        }
        Chart::Trend { title, unit, points, limits, from, to } => {
            let lo = points.iter().map(|p| p.1).chain(limits.iter().map(|l| l.1)).fold(f64::INFINITY, f64::min);
            let hi = points.iter().map(|p| p.1).chain(limits.iter().map(|l| l.1)).fold(f64::NEG_INFINITY, f64::max);
            let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (0.0, 1.0) };
            let span = hi - lo;
            let (lo, hi) = (lo - 0.05 * span, hi + 0.05 * span);
            let _ = write!(
                out,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\">\
                 <text x=\"{PAD_L}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{t}</text>",
                t = esc(title)
            );
            let ys = |v: f64| H - PAD_B - (H - PAD_B - PAD_T) * (v - lo) / (hi - lo);
            let xs = |t: Timestamp| PAD_L + (W - PAD_L - 10.0) * (t - from) as f64 / (to - from).max(1) as f64;
            for i in 0..=4 {
                let v = lo + (hi - lo) * i as f64 / 4.0;
                let _ = write!(
                    out,
                    "<line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\
                     <text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
                    W - 10.0,
                    PAD_L - 4.0,
                    ys(v) + 3.0,
                    round(v, 2),
                    y = ys(v)
                );
            }
            let _ =
                write!(out, "<text x=\"{}\" y=\"{}\" font-size=\"10\">{}</text>", PAD_L, H - PAD_B + 28.0, esc(unit));
            for (name, v) in limits {
                let y = ys(*v);
                let _ = write!(
                    out,
                    "<line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d32f2f\" stroke-dasharray=\"4 3\"/>\
                     <text x=\"{}\" y=\"{:.1}\" font-size=\"9\" fill=\"#d32f2f\" text-anchor=\"end\">{} {v}</text>",
                    W - 10.0,
                    W - 12.0,
                    y - 3.0,
                    esc(name)
                );
            }
            let pts: Vec<String> = points.iter().map(|(t, v)| format!("{:.1},{:.1}", xs(*t), ys(*v))).collect();
            let _ = write!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"/>",
                pts.join(" "),
                COLORS[0]
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// Writes `report.md`, `report.html` and `report.json` of `r` into `dir/<date>_<shift>/`
/// and returns that directory.
pub fn save(r: &ShiftReport, dir: &std::path::Path, tz_label: &str) -> std::io::Result<std::path::PathBuf> {
    let name = r.shift.replace('/', "_");
    let out = dir.join(name);
    std::fs::create_dir_all(&out)?;
    let tmp_then_rename = |file: &str, body: &str| -> std::io::Result<()> {
        let tmp = out.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, out.join(file))
    };
    tmp_then_rename("report.md", &markdown(r))?;
    tmp_then_rename("report.html", &html(r, tz_label))?;
    tmp_then_rename("report.json", &serde_json::to_string_pretty(r).unwrap_or_default())?;
    Ok(out)
}

/// Where the daemon keeps its reports: `<data_dir>/reports`.
pub fn reports_dir(store: &crate::store::Store) -> std::path::PathBuf {
    store.paths().root().join("reports")
}

/// A report's directory name for a shift label (`2026-11-28/A` → `2026-11-28_A`).
pub fn dir_name(label: &str) -> String {
    label.replace('/', "_")
}

/// How long after a shift's end the daemon writes its report (late samples first).
const AFTER_END: i64 = 60 * SECOND;
/// How often the daemon looks for a shift that ended.
const REPORT_CHECK: std::time::Duration = std::time::Duration::from_secs(20);

/// Writes and saves the report of shift `label`, appends a `report` event, and
/// returns its directory. Progress is logged.
pub fn write_and_save(
    ctx: &ToolContext<'_>,
    label: &str,
    model: Option<(&str, &mut ModelWriter<'_>)>,
) -> Result<std::path::PathBuf, ReportError> {
    let t = std::time::Instant::now();
    let r = write(
        ctx,
        label,
        model,
        |step, f| tracing::info!(shift = %label, step, done_pct = (100.0 * f) as u32, "Writing the shift report"),
    )?;
    let dir = save(&r, &reports_dir(ctx.store), &ctx.config.site.time_zone)?;
    let ev = crate::domain::Event {
        id: 0,
        ts: crate::domain::now_ns(),
        asset: None,
        kind: EventKind::Report,
        severity: 100,
        message: format!("shift report {} written ({} s)", r.shift, t.elapsed().as_secs()),
        details: json!({
            "shift": r.shift, "dir": dir_name(&r.shift), "written_by": r.written_by,
            "ungrounded": r.review.ungrounded, "checked": r.review.checked, "handover": r.handover,
            "seconds": round(t.elapsed().as_secs_f64(), 1),
        }),
    };
    ctx.store.events().append(&ev)?;
    tracing::info!(shift = %r.shift, dir = %dir.display(), seconds = t.elapsed().as_secs_f64(), written_by = %r.written_by, "Shift report written");
    Ok(dir)
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The files could not be written.
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
    /// The event log refused the report event.
    #[error(transparent)]
    Events(#[from] crate::store::events::EventLogError),
}

/// A model writer over the daemon's router (local model, escalating by its policy),
/// for agents that run on a blocking thread.
pub fn router_writer(
    router: crate::llm::router::Router,
    handle: tokio::runtime::Handle,
) -> impl FnMut(&[ChatMessage]) -> Result<String, String> {
    move |messages: &[ChatMessage]| {
        let ask = crate::llm::router::Ask {
            messages: messages.to_vec(),
            local: crate::llm::local::GenerateOptions { max_tokens: 160, ..Default::default() },
            task: crate::llm::router::Task::Routine,
            user_requested: false,
            review_rejections: 0,
        };
        handle.block_on(router.answer(ask)).map(|a| a.completion.text).map_err(|e| e.to_string())
    }
}

/// A tool chooser over the daemon's router: the local model answers under the schema.
pub fn router_chooser(
    router: crate::llm::router::Router,
    handle: tokio::runtime::Handle,
) -> impl FnMut(&[ChatMessage], &Json) -> Result<String, String> {
    move |messages: &[ChatMessage], schema: &Json| {
        let ask = crate::llm::router::Ask {
            messages: messages.to_vec(),
            local: crate::llm::local::GenerateOptions {
                max_tokens: 256,
                json_schema: Some(schema.clone()),
                ..Default::default()
            },
            task: crate::llm::router::Task::Routine,
            user_requested: false,
            review_rejections: 0,
        };
        handle.block_on(router.answer(ask)).map(|a| a.completion.text).map_err(|e| e.to_string())
    }
}

/// The daemon's report writer: when a shift of the calendar has ended, writes its
/// report (with the model when it is loaded) into `<data_dir>/reports/`.
pub async fn run(
    store: std::sync::Arc<crate::store::Store>,
    config: std::sync::Arc<crate::config::Config>,
    llm: Option<crate::llm::service::Llm>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let calendar = match crate::config::Calendar::new(&config) {
        Ok(c) if !config.shifts.is_empty() => std::sync::Arc::new(c),
        _ => return,
    };
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(REPORT_CHECK) => {}
        }
        if *stop.borrow() {
            break;
        }
        let now = crate::domain::now_ns();
        let Ok(shifts) = calendar.shifts_between(now - 24 * HOUR, now) else { continue };
        let Some(last) = shifts.into_iter().rev().find(|w| w.end + AFTER_END <= now) else { continue };
        if reports_dir(&store).join(dir_name(&last.label)).join("report.md").exists() {
            continue;
        }
        // A shift the gateway has no data of (before it was installed) gets no report.
        let ids: Vec<crate::domain::SeriesId> = store.series().iter().map(|m| m.id).collect();
        if !store.latest(&ids).into_iter().flatten().any(|l| l.ts >= last.start) {
            continue;
        }
        let (s, c, cal) = (store.clone(), config.clone(), calendar.clone());
        let router = llm.as_ref().and_then(crate::llm::service::Llm::router);
        let handle = tokio::runtime::Handle::current();
        let label = last.label.clone();
        let done = tokio::task::spawn_blocking(move || {
            let ctx = ToolContext { store: &s, config: &c, calendar: &cal, now };
            let name = c.llm.as_ref().map(|l| l.local_model.clone()).unwrap_or_default();
            match router {
                Some(r) => {
                    let mut w = router_writer(r, handle);
                    write_and_save(&ctx, &label, Some((&name, &mut w)))
                }
                None => write_and_save(&ctx, &label, None),
            }
        })
        .await;
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(shift = %last.label, error = %e, "Shift report not written; retrying"),
            Err(e) => tracing::warn!(error = %e, "The report task failed"),
        }
    }
}

/// Whether each fault of a linesim ground truth appears in a report's Markdown: a
/// line naming its machine (the protocol source for a comms loss, `setup` for a
/// changeover, the drifting valve's tag for a valve drift) with a local time from a
/// minute before the fault to its detection bound. Returns (fault, asset, found).
pub fn fault_coverage(
    markdown: &str,
    truth: &[Json],
    calendar: &crate::config::Calendar,
) -> Vec<(String, String, bool)> {
    const MIN: i64 = 60 * SECOND;
    let minute_of_day = |ts: i64| {
        let d = calendar.ts_to_local(ts);
        i64::from(d.hour()) * 60 + i64::from(d.minute())
    };
    let times_in = |l: &str| -> Vec<i64> {
        l.as_bytes()
            .windows(5)
            .filter(|w| w[2] == b':' && w.iter().enumerate().all(|(i, c)| i == 2 || c.is_ascii_digit()))
            .filter_map(|w| {
                let t = std::str::from_utf8(w).ok()?;
                Some(t[..2].parse::<i64>().ok()? * 60 + t[3..].parse::<i64>().ok()?)
            })
            .collect()
    };
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out = Vec::new();
    for f in truth.iter().filter(|r| r["kind"] == "fault_start") {
        let fault = s(&f["details"]["fault"]);
        let Some(ts) = f["ts_ns"].as_i64() else { continue };
        let (who, bound) = match fault {
            "comms_loss" => (format!("linesim-{}", s(&f["details"]["server"])), 2),
            "changeover" => ("setup".to_string(), 2),
            "valve_drift" => {
                (f["details"]["signals"].get(0).and_then(Json::as_str).unwrap_or("fill_level").to_string(), 150)
            }
            "bearing_wear" => (s(&f["asset"]).to_string(), 300),
            "heater_degradation" => (s(&f["asset"]).to_string(), 45),
            _ => (s(&f["asset"]).to_string(), 5),
        };
        let (lo, hi) = (minute_of_day(ts - MIN), minute_of_day(ts + bound * MIN));
        let inside = |t: i64| if lo <= hi { t >= lo && t <= hi } else { t >= lo || t <= hi };
        let found = lines.iter().any(|l| l.contains(&who) && times_in(l).into_iter().any(inside));
        out.push((fault.to_string(), who, found));
    }
    out
}
