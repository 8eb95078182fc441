//! Operator questions, in English and Chinese: "what is the state of line 1?",
//! "why did the filler stop at 10:40?", "what was OEE last shift and what cost us
//! most?".
//!
//! The team: a deterministic **intent router** reads the question (which machine,
//! which shift, which time) and the **scout** calls the tools that answer it, without
//! a model choosing them; the **analyst** picks what matters (the stop nearest the
//! time asked, the upstream or downstream machine that caused a starved or blocked
//! stop, the biggest loss); the **writer** turns that into a few sentences; the
//! **reviewer** strikes any sentence whose numbers, times or dates are not in the
//! tool results. The writer here is a template per intent and language, so the
//! answer is useful and grounded with no model at all (offline, or before the
//! model has loaded).

use serde::Serialize;
use serde_json::{json, Value as Json};

use super::review::{Review, Reviewer};
use super::tools::{self, ToolContext, ToolError, ToolOutput};
use crate::config::Config;
use crate::llm::ChatMessage;

/// The language of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// English.
    En,
    /// Chinese.
    Zh,
}

impl Language {
    /// Chinese when the question has any CJK character.
    pub fn of(text: &str) -> Language {
        if text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)) {
            Language::Zh
        } else {
            Language::En
        }
    }
}

/// What a question asks, as the router understood it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "intent", rename_all = "snake_case")]
pub enum Intent {
    /// Why a machine stopped (at a time, or its latest stop).
    WhyStop {
        /// The machine.
        asset: Option<String>,
        /// `HH:MM` asked about.
        at: Option<String>,
    },
    /// OEE of a shift (and what cost most).
    Oee {
        /// "last", "current" or a label.
        shift: String,
        /// One machine, or the line.
        asset: Option<String>,
    },
    /// Downtime by cause.
    Downtime {
        /// "last", "current" or a label.
        shift: String,
        /// One machine, or all.
        asset: Option<String>,
    },
    /// Alarms and anomalies.
    Alarms {
        /// One machine, or all.
        asset: Option<String>,
    },
    /// A tag's current value and recent range.
    TagValue {
        /// The tag.
        tag: String,
    },
    /// The state of the line or a machine.
    State {
        /// One machine, or all.
        asset: Option<String>,
    },
    /// Maintenance: health, remaining useful life and the work orders due.
    Maintenance {
        /// One machine, or all.
        asset: Option<String>,
    },
    /// None of the above: the model chose the tool.
    Open {
        /// The tool the model chose.
        tool: String,
    },
}

/// Options of [`ask`].
#[derive(Clone, Debug, Default)]
pub struct AskOptions {
    /// Answer in this language instead of the question's.
    pub language: Option<Language>,
}

/// An answer with the facts it rests on.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    /// The question.
    pub question: String,
    /// What the router understood.
    pub intent: Intent,
    /// The answer's language.
    pub language: Language,
    /// The text a person reads.
    pub text: String,
    /// Who wrote it: `template`, or the model's name.
    pub written_by: String,
    /// The tool calls it rests on.
    pub facts: Vec<ToolOutput>,
    /// What the reviewer found.
    pub review: Review,
}

fn has(q: &str, words: &[&str]) -> bool {
    words.iter().any(|w| q.contains(w))
}

fn squash(s: &str) -> String {
    s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// Chinese names of machine kinds.
const KIND_ZH: &[(&str, &[&str])] = &[
    ("filler", &["灌装"]),
    ("capper", &["旋盖", "封盖", "压盖"]),
    ("washer", &["洗瓶", "清洗"]),
    ("labeler", &["贴标"]),
    ("case_packer", &["装箱", "包装"]),
    ("depalletizer", &["卸垛", "拆垛"]),
    ("conveyor", &["输送"]),
];

/// The machine a question names: by id or name (ignoring case, spaces and
/// underscores, longest match first), else by a Chinese kind name when one machine
/// has that kind.
fn find_asset(q: &str, config: &Config) -> Option<String> {
    let sq = squash(q);
    let mut best: Option<(usize, &str)> = None;
    for a in &config.assets {
        for n in [squash(&a.id), squash(&a.name)] {
            if !n.is_empty() && sq.contains(&n) && best.is_none_or(|(l, _)| n.len() > l) {
                best = Some((n.len(), a.id.as_str()));
            }
        }
    }
    if let Some((_, id)) = best {
        return Some(id.to_string());
    }
    for (kind, words) in KIND_ZH {
        if has(q, words) {
            let of_kind: Vec<&str> = config.assets.iter().filter(|a| a.kind == *kind).map(|a| a.id.as_str()).collect();
            if let [one] = of_kind.as_slice() {
                return Some((*one).to_string());
            }
        }
    }
    None
}

/// A clock time in the question (`10:40`, `10点40`).
fn find_time(q: &str) -> Option<String> {
    let b = q.as_bytes();
    for i in 0..b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_digit()) {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let rest = &q[j..];
            let sep = if rest.starts_with(':') {
                1
            } else if rest.starts_with('点') {
                '点'.len_utf8()
            } else {
                0
            };
            if sep > 0 && (1..=2).contains(&(j - i)) {
                let m: String = rest[sep..].chars().take_while(char::is_ascii_digit).collect();
                if let (Ok(h), Ok(mm)) = (q[i..j].parse::<u32>(), m.parse::<u32>()) {
                    if h < 24 && mm < 60 && m.len() == 2 {
                        return Some(format!("{h:02}:{mm:02}"));
                    }
                }
            }
        }
    }
    None
}

/// Which shift a question means: a label, "this shift", else the last one.
fn find_shift(q: &str) -> String {
    let lower = q.to_lowercase();
    if let Some(label) = lower.split_whitespace().find(|w| w.len() >= 12 && w.as_bytes()[4] == b'-' && w.contains('/'))
    {
        let label = label.trim_matches(|c: char| !c.is_alphanumeric());
        let (date, name) = label.split_once('/').unwrap_or((label, ""));
        return format!("{date}/{}", name.to_uppercase());
    }
    if has(&lower, &["this shift", "current shift", "本班", "当前班", "这个班", "这班"]) {
        return "current".into();
    }
    "last".into()
}

/// The deterministic intent router.
pub fn route(question: &str, config: &Config) -> Intent {
    let q = question.to_lowercase();
    let asset = find_asset(question, config);
    if has(&q, &["why", "为什么", "为何", "原因", "怎么停"])
        && has(&q, &["stop", "down", "fault", "halt", "trip", "停", "故障"])
    {
        return Intent::WhyStop { asset, at: find_time(question) };
    }
    if has(
        &q,
        &[
            "oee",
            "efficiency",
            "效率",
            "稼动",
            "good",
            "output",
            "produced",
            "reject",
            "quality",
            "合格",
            "产量",
            "废品",
            "质量",
        ],
    ) {
        return Intent::Oee { shift: find_shift(question), asset };
    }
    if has(&q, &["downtime", "stoppage", "停机", "停线", "停了多久"])
        || (has(&q, &["stops", "stopped"]) && !has(&q, &["state", "status"]))
        || (q.contains("how long") && q.contains("down"))
    {
        return Intent::Downtime { shift: find_shift(question), asset };
    }
    if has(
        &q,
        &[
            "maintenance",
            "service",
            "work order",
            "remaining life",
            "remaining useful life",
            "replace",
            "overhaul",
            "保养",
            "维护",
            "维修",
            "寿命",
            "更换",
        ],
    ) {
        return Intent::Maintenance { asset };
    }
    if has(&q, &["alarm", "anomal", "报警", "告警", "异常"]) {
        return Intent::Alarms { asset };
    }
    if let Some(tag) = find_tag(&q, asset.as_deref(), config) {
        return Intent::TagValue { tag };
    }
    Intent::State { asset }
}

/// Words of a measured quantity, English and Chinese, matched against tag names
/// and descriptions.
const QUANTITIES: &[(&[&str], &[&str])] = &[
    (&["temperature", "temp", "温度"], &["temp"]),
    (&["pressure", "压力"], &["pressure"]),
    (&["vibration", "振动"], &["vib"]),
    (&["speed", "速度", "转速"], &["speed"]),
    (&["torque", "扭矩"], &["torque"]),
    (&["current", "电流"], &["current"]),
    (&["level", "液位"], &["level"]),
    (&["energy", "power", "能耗", "功率"], &["energy", "power"]),
];

fn find_tag(q: &str, asset: Option<&str>, config: &Config) -> Option<String> {
    if let Some(t) = config.tags.iter().filter(|t| q.contains(&t.name.to_lowercase())).max_by_key(|t| t.name.len()) {
        return Some(t.name.clone());
    }
    let asset = asset?;
    for (words, keys) in QUANTITIES {
        if has(q, words) {
            let found = config.tags.iter().filter(|t| t.asset == asset).find(|t| {
                let n = t.name.to_lowercase();
                let d = t.description.to_lowercase();
                keys.iter().any(|k| n.contains(k) || d.contains(k))
            });
            if let Some(t) = found {
                return Some(t.name.clone());
            }
        }
    }
    None
}

/// The scout: the tool calls an intent needs.
fn scout(ctx: &ToolContext<'_>, intent: &Intent) -> Result<Vec<ToolOutput>, ToolError> {
    let asset_arg = |a: &Option<String>| a.as_ref().map_or(json!({}), |a| json!({ "asset": a }));
    let calls: Vec<(&str, Json)> = match intent {
        Intent::WhyStop { asset, .. } => vec![
            ("line_state", asset_arg(asset)),
            ("downtime", json!({ "hours": 8 })),
            ("events", {
                let mut a = asset_arg(asset);
                a["hours"] = json!(8);
                a["kinds"] = json!(["alarm", "anomaly"]);
                a
            }),
        ],
        Intent::Oee { shift, asset } => {
            let mut a = asset_arg(asset);
            a["shift"] = json!(shift);
            vec![("oee", a.clone()), ("downtime", a)]
        }
        Intent::Downtime { shift, asset } => {
            let mut a = asset_arg(asset);
            a["shift"] = json!(shift);
            vec![("downtime", a)]
        }
        Intent::Alarms { asset } => {
            let mut a = asset_arg(asset);
            a["kinds"] = json!(["alarm", "anomaly"]);
            a["hours"] = json!(8);
            vec![("events", a)]
        }
        Intent::TagValue { tag } => {
            vec![("tag_latest", json!({ "tag": tag })), ("tag_stats", json!({ "tag": tag, "hours": 1 }))]
        }
        Intent::State { asset } => vec![("line_state", asset_arg(asset))],
        Intent::Maintenance { asset } => vec![("maintenance_plan", asset_arg(asset))],
        Intent::Open { .. } => Vec::new(),
    };
    calls.into_iter().map(|(name, args)| tools::run(ctx, name, &args)).collect()
}

fn result<'a>(facts: &'a [ToolOutput], tool: &str) -> &'a Json {
    facts.iter().find(|f| f.tool == tool).map_or(&Json::Null, |f| &f.result)
}

fn s(j: &Json) -> String {
    match j {
        Json::String(s) => s.clone(),
        Json::Null => "?".into(),
        other => other.to_string(),
    }
}

/// Minutes after midnight of `HH:MM`.
fn minute_of(hhmm: &str) -> Option<i64> {
    let (h, m) = hhmm.split_once(':')?;
    Some(h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?)
}

/// Names a cause for a person.
fn cause_text(cause: &str, lang: Language) -> String {
    match (cause, lang) {
        ("starved", Language::En) => "starved (no material from upstream)".into(),
        ("blocked", Language::En) => "blocked (outfeed full downstream)".into(),
        ("starved", Language::Zh) => "缺料（上游来料不足）".into(),
        ("blocked", Language::Zh) => "堵料（下游出口已满）".into(),
        (c, Language::Zh) if c.starts_with("fault_") => format!("故障 {c}"),
        (c, _) => c.to_string(),
    }
}

/// The analyst and the writer for "why did X stop": the stop nearest the time asked
/// (or the latest), and for a starved or blocked stop, the machines up- or
/// downstream that were in fault while it lasted.
fn why_stop(asset: Option<&str>, at: Option<&str>, facts: &[ToolOutput], lang: Language) -> String {
    let Some(asset) = asset else {
        return match lang {
            Language::En => "Which machine do you mean? Name it, e.g. \"why did the filler stop at 10:40?\"".into(),
            Language::Zh => "请说明是哪台设备，例如“灌装机为什么在10:40停机？”".into(),
        };
    };
    let down = result(facts, "downtime");
    let machines = down["machines"].as_array().cloned().unwrap_or_default();
    let mine = machines.iter().find(|m| m["asset"] == asset);
    let stops = mine.and_then(|m| m["stops"].as_array()).cloned().unwrap_or_default();
    let target = at.and_then(minute_of);
    let stop = match target {
        Some(t) => stops.iter().min_by_key(|s| {
            let from = minute_of(s["from"]["at"].as_str().unwrap_or("")).unwrap_or(i64::MAX / 4);
            let to = minute_of(s["to"]["at"].as_str().unwrap_or("")).unwrap_or(from);
            if from <= t && t <= to {
                0
            } else {
                (from - t).abs().min((to - t).abs())
            }
        }),
        None => stops.last(),
    };
    let Some(stop) = stop else {
        return match lang {
            Language::En => format!("{asset} had no stops in planned production time over the last 8 hours."),
            Language::Zh => format!("{asset} 在过去8小时的计划生产时间内没有停机。"),
        };
    };
    let cause = s(&stop["cause"]);
    let (from, to, minutes) = (s(&stop["from"]["at"]), s(&stop["to"]["at"]), s(&stop["minutes"]));
    let covers =
        target.is_none_or(|t| matches!((minute_of(&from), minute_of(&to)), (Some(f), Some(e)) if f <= t && t <= e));
    let mut text = String::new();
    if !covers {
        if let Some(at) = at {
            text.push_str(&match lang {
                Language::En => format!("{asset} was not stopped at {at}; the nearest stop: "),
                Language::Zh => format!("{asset} 在 {at} 没有停机；最近的一次停机："),
            });
        }
    }
    text += &match lang {
        Language::En => {
            format!("{asset} stopped at {from} for {minutes} min (until {to}): {}.", cause_text(&cause, lang))
        }
        Language::Zh => {
            format!("{asset} 于 {from} 停机 {minutes} 分钟（至 {to}），原因：{}。", cause_text(&cause, lang))
        }
    };
    // Up- or downstream culprits: machines in fault while this stop lasted.
    if cause == "starved" || cause == "blocked" {
        let (f, t) = (minute_of(&from), minute_of(&to));
        let mut culprits = Vec::new();
        for m in &machines {
            if m["asset"] == asset {
                continue;
            }
            for st in m["stops"].as_array().into_iter().flatten() {
                let c = s(&st["cause"]);
                let (sf, stt) = (
                    minute_of(st["from"]["at"].as_str().unwrap_or("")),
                    minute_of(st["to"]["at"].as_str().unwrap_or("")),
                );
                if let (Some(f), Some(t), Some(sf), Some(stt)) = (f, t, sf, stt) {
                    if c.starts_with("fault") && sf <= t && stt >= f {
                        culprits.push(format!(
                            "{} {} {}–{}",
                            s(&m["asset"]),
                            c,
                            s(&st["from"]["at"]),
                            s(&st["to"]["at"])
                        ));
                    }
                }
            }
        }
        if !culprits.is_empty() {
            culprits.truncate(3);
            text.push_str(&match lang {
                Language::En => format!(" At the same time: {}.", culprits.join("; ")),
                Language::Zh => format!(" 同一时间：{}。", culprits.join("；")),
            });
        }
    }
    // Alarms and anomalies of the machine around the stop.
    let evs = result(facts, "events")["events"].as_array().cloned().unwrap_or_default();
    let near: Vec<String> = evs
        .iter()
        .filter(|e| {
            let em = minute_of(e["time"]["at"].as_str().unwrap_or(""));
            matches!((em, minute_of(&from)), (Some(e), Some(f)) if (e - f).abs() <= 30)
        })
        .take(3)
        .map(|e| format!("{} {}", s(&e["time"]["at"]), s(&e["message"])))
        .collect();
    if !near.is_empty() {
        text.push_str(&match lang {
            Language::En => format!("\nAlarms and anomalies around then: {}.", near.join("; ")),
            Language::Zh => format!("\n前后的报警与异常：{}。", near.join("；")),
        });
    }
    let state =
        result(facts, "line_state")["machines"].as_array().and_then(|m| m.first()).cloned().unwrap_or(Json::Null);
    if !state.is_null() {
        text.push_str(&match lang {
            Language::En => format!(
                "\nNow ({}): {} since {}.",
                s(&result(facts, "line_state")["now"]["at"]),
                s(&state["state"]),
                s(&state["since"]["at"])
            ),
            Language::Zh => format!(
                "\n当前（{}）：{}，自 {} 起。",
                s(&result(facts, "line_state")["now"]["at"]),
                s(&state["state"]),
                s(&state["since"]["at"])
            ),
        });
    }
    text
}

fn oee_text(asset: Option<&str>, facts: &[ToolOutput], lang: Language) -> String {
    let r = result(facts, "oee");
    let label = s(&r["window"]["shift"]);
    let row = match asset {
        Some(a) => r["machines"].as_array().and_then(|m| m.iter().find(|x| x["asset"] == a)).cloned(),
        None => r["lines"].as_array().and_then(|l| l.first()).cloned(),
    };
    let Some(row) = row else {
        return match lang {
            Language::En => "No OEE figures for that window.".into(),
            Language::Zh => "该时段没有OEE数据。".into(),
        };
    };
    let who = asset.map_or_else(|| format!("{} ({})", s(&row["line"]), s(&row["key_asset"])), str::to_string);
    let mut text = match lang {
        Language::En => format!(
            "OEE of {who} in shift {label}: {} % (availability {} %, performance {} %, quality {} %). Good {}, reject {}.",
            s(&row["oee_pct"]), s(&row["availability_pct"]), s(&row["performance_pct"]), s(&row["quality_pct"]), s(&row["good"]), s(&row["reject"])
        ),
        Language::Zh => format!(
            "{who} 在班次 {label} 的OEE为 {} %（可用率 {} %，性能 {} %，质量 {} %）。合格 {}，废品 {}。",
            s(&row["oee_pct"]), s(&row["availability_pct"]), s(&row["performance_pct"]), s(&row["quality_pct"]), s(&row["good"]), s(&row["reject"])
        ),
    };
    // What cost most: root causes (faults) across the machines, longest first;
    // starved and blocked time is their knock-on effect on the neighbours, and setup
    // is planned work.
    let mut faults: Vec<(f64, String, String)> = Vec::new();
    let mut setup: Option<f64> = None;
    for m in result(facts, "downtime")["machines"].as_array().into_iter().flatten() {
        for c in m["causes"].as_array().into_iter().flatten() {
            let (min, cause) = (c["minutes"].as_f64().unwrap_or(0.0), s(&c["cause"]));
            if cause.starts_with("fault") {
                faults.push((min, s(&m["asset"]), cause));
            } else if cause == "setup" {
                setup = Some(setup.map_or(min, |x: f64| x.max(min)));
            }
        }
    }
    faults.sort_by(|a, b| b.0.total_cmp(&a.0));
    let unit = match lang {
        Language::En => "min",
        Language::Zh => "分钟",
    };
    let listed: Vec<String> =
        faults.iter().take(3).map(|(m, w, c)| format!("{w} {} {m} {unit}", cause_text(c, lang))).collect();
    if !listed.is_empty() {
        text.push_str(&match lang {
            Language::En => format!(
                "\nWhat cost most (root causes; starved and blocked time on the other machines follows from them): {}.",
                listed.join("; ")
            ),
            Language::Zh => format!("\n损失最大的根本原因（其他设备的缺料、堵料由此引起）：{}。", listed.join("；")),
        });
    }
    if let Some(m) = setup {
        text.push_str(&match lang {
            Language::En => format!(" Setup took up to {m} min per machine."),
            Language::Zh => format!(" 换型每台最多 {m} 分钟。"),
        });
    }
    text
}

fn downtime_text(facts: &[ToolOutput], lang: Language) -> String {
    let r = result(facts, "downtime");
    let label = s(&r["window"]["shift"]);
    let mut lines = vec![match lang {
        Language::En => format!("Downtime in shift {label}:"),
        Language::Zh => format!("班次 {label} 的停机："),
    }];
    for m in r["machines"].as_array().into_iter().flatten() {
        let causes: Vec<String> = m["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .take(3)
            .map(|c| {
                let unit = if lang == Language::Zh { "分钟" } else { "min" };
                format!("{} {} {unit}", cause_text(&s(&c["cause"]), lang), s(&c["minutes"]))
            })
            .collect();
        if m["downtime_min"].as_f64().unwrap_or(0.0) > 0.0 {
            lines.push(match lang {
                Language::En => format!("- {}: {} min ({})", s(&m["asset"]), s(&m["downtime_min"]), causes.join(", ")),
                Language::Zh => {
                    format!("- {}：{} 分钟（{}）", s(&m["asset"]), s(&m["downtime_min"]), causes.join("，"))
                }
            });
        }
    }
    if lines.len() == 1 {
        lines.push(match lang {
            Language::En => "no downtime.".into(),
            Language::Zh => "无停机。".into(),
        });
    }
    lines.join("\n")
}

fn maintenance_text(facts: &[ToolOutput], lang: Language) -> String {
    let r = result(facts, "maintenance_plan");
    let orders = r["work_orders"].as_array().cloned().unwrap_or_default();
    let mut lines = vec![match (lang, orders.is_empty()) {
        (Language::En, true) => format!("No work order is due within {} hours.", s(&r["horizon_hours"])),
        (Language::En, false) => format!("{} work orders, most urgent first:", orders.len()),
        (Language::Zh, true) => format!("{} 小时内没有到期的维护工单。", s(&r["horizon_hours"])),
        (Language::Zh, false) => format!("共 {} 个维护工单，按紧急程度排列：", orders.len()),
    }];
    for o in orders.iter().take(5) {
        let rul = match (o["rul_hours"].as_f64(), o["rul_low_hours"].as_f64(), o["rul_high_hours"].as_f64()) {
            (Some(m), Some(lo), Some(hi)) => match lang {
                Language::En => format!("; remaining life {m} h (band {lo}–{hi} h)"),
                Language::Zh => format!("；剩余寿命 {m} 小时（区间 {lo}–{hi} 小时）"),
            },
            _ => String::new(),
        };
        lines.push(match lang {
            Language::En => format!(
                "{}. {}: {}, by {} ({} priority){rul}.",
                s(&o["rank"]),
                s(&o["asset"]),
                s(&o["action"]),
                s(&o["due_by"]["local"]),
                s(&o["priority"])
            ),
            Language::Zh => format!(
                "{}. {}：{}，截止 {}（优先级 {}）{rul}。",
                s(&o["rank"]),
                s(&o["asset"]),
                s(&o["action"]),
                s(&o["due_by"]["local"]),
                s(&o["priority"])
            ),
        });
    }
    lines.join("\n")
}

/// The facts of a tool the model chose, as lines of `key: value` (numbers as the tool gave them).
fn open_text(facts: &[ToolOutput]) -> String {
    fn walk(prefix: &str, j: &Json, out: &mut Vec<String>) {
        if out.len() >= 30 {
            return;
        }
        match j {
            Json::Object(o) => {
                for (k, v) in o {
                    if k == "utc" || k == "local" {
                        continue;
                    }
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix} {k}") };
                    walk(&p, v, out);
                }
            }
            Json::Array(a) => {
                for v in a.iter().take(10) {
                    walk(prefix, v, out);
                }
            }
            Json::Null => {}
            other => out.push(format!("{prefix}: {}", s(other))),
        }
    }
    let mut out = Vec::new();
    for f in facts {
        walk(&f.tool, &f.result, &mut out);
    }
    out.join("\n")
}

fn alarms_text(facts: &[ToolOutput], lang: Language) -> String {
    let r = result(facts, "events");
    let list = r["events"].as_array().cloned().unwrap_or_default();
    let total = s(&r["total"]);
    let mut lines = vec![match lang {
        Language::En => format!("Alarms and anomalies from {} to {}: {total}.", s(&r["from"]["at"]), s(&r["to"]["at"])),
        Language::Zh => format!("{} 至 {} 的报警与异常：{total} 条。", s(&r["from"]["at"]), s(&r["to"]["at"])),
    }];
    for e in list.iter().take(8) {
        lines.push(format!("- {} {} {}", s(&e["time"]["at"]), s(&e["asset"]), s(&e["message"])));
    }
    lines.join("\n")
}

fn tag_text(facts: &[ToolOutput], lang: Language) -> String {
    let l = result(facts, "tag_latest");
    let st = result(facts, "tag_stats");
    if l["value"].is_null() {
        return match lang {
            Language::En => format!("No data for {}.", s(&l["tag"])),
            Language::Zh => format!("{} 没有数据。", s(&l["tag"])),
        };
    }
    let unit = s(&l["unit"]);
    let mut text = match lang {
        Language::En => format!(
            "{} ({}) is {} {unit} at {}.",
            s(&l["tag"]),
            s(&l["description"]),
            s(&l["value"]),
            s(&l["time"]["at"])
        ),
        Language::Zh => format!(
            "{}（{}）在 {} 为 {} {unit}。",
            s(&l["tag"]),
            s(&l["description"]),
            s(&l["time"]["at"]),
            s(&l["value"])
        ),
    };
    if st["count"].as_u64().unwrap_or(0) > 0 {
        text.push_str(&match lang {
            Language::En => format!(
                " Over the last hour: min {} at {}, max {} at {}, mean {} {unit}.",
                s(&st["min"]["value"]),
                s(&st["min"]["time"]["at"]),
                s(&st["max"]["value"]),
                s(&st["max"]["time"]["at"]),
                s(&st["mean"])
            ),
            Language::Zh => format!(
                " 过去一小时：最低 {}（{}），最高 {}（{}），平均 {} {unit}。",
                s(&st["min"]["value"]),
                s(&st["min"]["time"]["at"]),
                s(&st["max"]["value"]),
                s(&st["max"]["time"]["at"]),
                s(&st["mean"])
            ),
        });
    }
    text
}

fn state_text(facts: &[ToolOutput], lang: Language) -> String {
    let r = result(facts, "line_state");
    let mut lines = vec![match lang {
        Language::En => format!("State at {}:", s(&r["now"]["at"])),
        Language::Zh => format!("{} 的状态：", s(&r["now"]["at"])),
    }];
    for m in r["machines"].as_array().into_iter().flatten() {
        let fault = m.get("fault_code").map(|c| format!(" ({c})")).unwrap_or_default();
        lines.push(match lang {
            Language::En => format!(
                "- {}: {}{fault} since {} ({} min)",
                s(&m["asset"]),
                s(&m["state"]),
                s(&m["since"]["at"]),
                s(&m["for_min"])
            ),
            Language::Zh => format!(
                "- {}：{}{fault}，自 {} 起（{} 分钟）",
                s(&m["asset"]),
                s(&m["state"]),
                s(&m["since"]["at"]),
                s(&m["for_min"])
            ),
        });
    }
    lines.join("\n")
}

/// A language model that phrases answers: the messages in, its text out (or why not).
pub type ModelWriter<'m> = dyn FnMut(&[ChatMessage]) -> Result<String, String> + 'm;

/// Answers an operator's question from the tools, with the template writer.
pub fn ask(ctx: &ToolContext<'_>, question: &str, opts: &AskOptions) -> Result<Answer, ToolError> {
    ask_with(ctx, question, opts, None)
}

/// Answers an operator's question; with a model, the model phrases the analyst's
/// facts and the reviewer checks its text twice over: no number, time or date that
/// is not in the tool results, and none of the facts' numbers and names left out.
/// A text that fails is sent back once with what was wrong; if it fails again, the
/// template's text is the answer and `written_by` says so.
pub fn ask_with(
    ctx: &ToolContext<'_>,
    question: &str,
    opts: &AskOptions,
    model: Option<(&str, &mut ModelWriter<'_>)>,
) -> Result<Answer, ToolError> {
    ask_full(ctx, question, opts, model, None)
}

/// A language model that answers under a JSON schema (constrained decoding): the
/// messages and the schema in, its JSON text out (or why not).
pub type ToolChooser<'m> = dyn FnMut(&[ChatMessage], &Json) -> Result<String, String> + 'm;

/// How many tool calls the model may try for one question (a failed call counts).
pub const TOOL_STEPS: usize = 3;

/// Whether a question the router sent to the state fallback really asks for the
/// state (else the model may choose a tool).
fn asks_for_state(question: &str) -> bool {
    let q = question.to_lowercase();
    has(
        &q,
        &["state", "status", "running", "happening", "going on", "how is", "how are", "状态", "运行", "怎么样", "情况"],
    )
}

/// The schema of one tool call: `{"tool": name, "args": {...}}` for any of the tools.
pub fn tool_call_schema(config: &Config) -> Json {
    let any: Vec<Json> = tools::definitions(config)
        .into_iter()
        .map(|d| {
            json!({ "type": "object",
                    "properties": { "tool": { "type": "string", "enum": [d.name] }, "args": d.parameters },
                    "required": ["tool", "args"], "additionalProperties": false })
        })
        .collect();
    json!({ "anyOf": any })
}

/// The model picks tools for a question the router has no intent for: one call at a
/// time under the tool-call schema, at most [`TOOL_STEPS`] tries; a failed call goes
/// back to it with the error. Returns the successful calls.
fn choose_tools(ctx: &ToolContext<'_>, question: &str, choose: &mut ToolChooser<'_>) -> Vec<ToolOutput> {
    let schema = tool_call_schema(ctx.config);
    let list: Vec<String> =
        tools::definitions(ctx.config).iter().map(|d| format!("- {}: {}", d.name, d.description)).collect();
    let mut messages = vec![
        ChatMessage::system(format!(
            "You pick the one tool that answers an operator's question about a production line. Answer with JSON: {{\"tool\": name, \"args\": {{...}}}}. Tools:\n{}",
            list.join("\n")
        )),
        ChatMessage::user(question.to_string()),
    ];
    let mut facts = Vec::new();
    for _ in 0..TOOL_STEPS {
        let text = match choose(&messages, &schema) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "The model could not choose a tool");
                break;
            }
        };
        let call: Json = match serde_json::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, text = %text, "The model's tool call is not JSON");
                messages.push(ChatMessage::assistant(text));
                messages.push(ChatMessage::user(format!("That is not valid JSON ({e}). Try again.")));
                continue;
            }
        };
        let name = call["tool"].as_str().unwrap_or_default().to_string();
        match tools::run(ctx, &name, &call["args"]) {
            Ok(out) => {
                facts.push(out);
                break;
            }
            Err(e) => {
                tracing::debug!(error = %e, call = %call, "The model's tool call failed");
                messages.push(ChatMessage::assistant(text));
                messages.push(ChatMessage::user(format!("The tool failed: {e}. Choose again.")));
            }
        }
    }
    facts
}

/// [`ask_with`], and with `chooser` the model picks the tools for a question none of
/// the router's intents covers (its text is then checked like any other).
pub fn ask_full(
    ctx: &ToolContext<'_>,
    question: &str,
    opts: &AskOptions,
    mut model: Option<(&str, &mut ModelWriter<'_>)>,
    chooser: Option<&mut ToolChooser<'_>>,
) -> Result<Answer, ToolError> {
    let lang = opts.language.unwrap_or_else(|| Language::of(question));
    let mut intent = route(question, ctx.config);
    let mut facts = Vec::new();
    if let (Intent::State { .. }, Some(choose)) = (&intent, chooser) {
        if !asks_for_state(question) {
            facts = choose_tools(ctx, question, choose);
            if let Some(f) = facts.first() {
                intent = Intent::Open { tool: f.tool.clone() };
            }
        }
    }
    if facts.is_empty() {
        facts = scout(ctx, &intent)?;
    }
    let draft = match &intent {
        Intent::WhyStop { asset, at } => why_stop(asset.as_deref(), at.as_deref(), &facts, lang),
        Intent::Oee { asset, .. } => oee_text(asset.as_deref(), &facts, lang),
        Intent::Downtime { .. } => downtime_text(&facts, lang),
        Intent::Alarms { .. } => alarms_text(&facts, lang),
        Intent::Maintenance { .. } => maintenance_text(&facts, lang),
        Intent::Open { .. } => open_text(&facts),
        Intent::TagValue { .. } => tag_text(&facts, lang),
        Intent::State { .. } => state_text(&facts, lang),
    };
    let reviewer = Reviewer::new(&facts, question, ctx.config);
    let review = reviewer.review(&draft);
    let draft = if review.passed() { draft } else { review.kept.clone() };
    let mut answer = Answer {
        question: question.to_string(),
        intent,
        language: lang,
        text: draft.clone(),
        written_by: "template".into(),
        facts,
        review,
    };
    let Some((name, write)) = model.as_mut() else { return Ok(answer) };
    let instruction = match lang {
        Language::En => "You are the copilot of a bottling line. Rewrite the FACTS as a short, clear answer to the operator's question, in English. Keep every number, time, machine name and code exactly as written in FACTS. Add no other numbers, no advice you cannot see in FACTS.",
        Language::Zh => "你是灌装线的助手。请用中文把“事实”改写成对操作员问题的简短回答。所有数字、时间、设备名和代码必须与“事实”完全一致，不要添加任何其他数字。",
    };
    let mut messages =
        vec![ChatMessage::system(instruction), ChatMessage::user(format!("Question: {question}\n\nFACTS:\n{draft}"))];
    let required = required_facts(&draft, &reviewer);
    for attempt in 0..2 {
        let text = match write(&messages) {
            Ok(t) => t.trim().to_string(),
            Err(e) => {
                answer.written_by = format!("template ({name} failed: {e})");
                return Ok(answer);
            }
        };
        let review = reviewer.review(&text);
        let missing: Vec<&String> = required.iter().filter(|r| !text.contains(r.as_str())).collect();
        let broken = unreadable(&text, &draft);
        if review.passed() && missing.is_empty() && broken.is_none() {
            answer.text = text;
            answer.written_by = (*name).to_string();
            answer.review = review;
            return Ok(answer);
        }
        if attempt == 0 {
            let mut why = Vec::new();
            if !review.passed() {
                why.push(format!("these are not in FACTS: {}", review.ungrounded.join(", ")));
            }
            if !missing.is_empty() {
                why.push(format!(
                    "you left out: {}",
                    missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            messages.push(ChatMessage::assistant(text));
            messages.push(ChatMessage::user(format!(
                "Rejected by the reviewer ({}). Rewrite the FACTS again.",
                why.join("; ")
            )));
        }
    }
    answer.written_by = format!("template ({name}'s text rejected twice by the reviewer)");
    Ok(answer)
}

/// Why a model's text is not fit to show a person, if it is not: empty, the
/// prompt's scaffolding echoed, a line or sentence repeated, a character run, or far
/// longer than the facts.
fn unreadable(text: &str, draft: &str) -> Option<&'static str> {
    if text.is_empty() {
        return Some("the answer is empty");
    }
    if text.contains("FACTS") || text.contains("Question:") || text.contains("事实") {
        return Some("the prompt was echoed");
    }
    if text.chars().count() > 2 * draft.chars().count() + 80 {
        return Some("the answer is much longer than the facts");
    }
    let mut seen = std::collections::HashSet::new();
    for piece in text.split(['\n', '。', '.']).map(str::trim).filter(|p| p.chars().count() >= 6) {
        if !seen.insert(piece) {
            return Some("a sentence is repeated");
        }
    }
    let chars: Vec<char> = text.chars().collect();
    if chars.windows(6).any(|w| !w[0].is_ascii_digit() && !w[0].is_whitespace() && w.iter().all(|c| *c == w[0])) {
        return Some("a character is repeated");
    }
    None
}

/// What a phrasing must keep from the facts: every number, time and name of a machine
/// or code (`fault_201`) in the first two lines of the draft.
pub(crate) fn required_facts(draft: &str, reviewer: &Reviewer) -> Vec<String> {
    let head: String = draft.lines().take(2).collect::<Vec<_>>().join("\n");
    let mut keep = reviewer.tokens_as_written(&head);
    for w in head.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if w.starts_with("fault_") || reviewer.is_name(w) {
            keep.push(w.to_string());
        }
    }
    keep.sort();
    keep.dedup();
    keep
}

/// The answer as text for a terminal: the answer, then the facts it used.
pub fn render(a: &Answer) -> String {
    let mut out = a.text.clone();
    out.push_str(match a.language {
        Language::En => "\n\nFacts used:\n",
        Language::Zh => "\n\n依据：\n",
    });
    for f in &a.facts {
        out.push_str(&format!("- {} {}\n", f.tool, f.args));
    }
    if !a.review.passed() {
        out.push_str(&format!("(struck by the reviewer: {})\n", a.review.ungrounded.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Config {
        Config::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo.toml")).expect("demo config")
    }

    #[test]
    fn the_router_reads_machine_time_shift_and_language() {
        let c = demo();
        let why = |q: &str| route(q, &c);
        assert_eq!(
            why("Why did the filler stop at 10:40?"),
            Intent::WhyStop { asset: Some("filler".into()), at: Some("10:40".into()) }
        );
        assert_eq!(
            why("灌装机为什么在9点05停机？"),
            Intent::WhyStop { asset: Some("filler".into()), at: Some("09:05".into()) }
        );
        assert_eq!(why("why is the case packer down"), Intent::WhyStop { asset: Some("case_packer".into()), at: None });
        // conveyor1 is not conveyor12's prefix problem: the longest name wins.
        assert_eq!(why("state of conveyor1"), Intent::State { asset: Some("conveyor1".into()) });
        assert_eq!(why("What was OEE last shift?"), Intent::Oee { shift: "last".into(), asset: None });
        assert_eq!(why("OEE for 2026-11-28/a please"), Intent::Oee { shift: "2026-11-28/A".into(), asset: None });
        assert_eq!(why("本班旋盖机的效率"), Intent::Oee { shift: "current".into(), asset: Some("capper".into()) });
        assert_eq!(
            why("How long was the washer down last shift?"),
            Intent::Downtime { shift: "last".into(), asset: Some("washer".into()) }
        );
        assert_eq!(why("有哪些报警？"), Intent::Alarms { asset: None });
        assert_eq!(why("What is the capper's vibration?"), Intent::TagValue { tag: "capper.vib_de_rms".into() });
        assert_eq!(
            why("What was the washer's quality rate last shift?"),
            Intent::Oee { shift: "last".into(), asset: Some("washer".into()) }
        );
        assert_eq!(why("what's happening on line 1"), Intent::State { asset: None });
        assert_eq!(why("when is the capper due for service?"), Intent::Maintenance { asset: Some("capper".into()) });
        assert_eq!(why("灌装机什么时候需要保养？"), Intent::Maintenance { asset: Some("filler".into()) });
        assert!(asks_for_state("what's happening on line 1") && !asks_for_state("tell me about the capper"));
        assert_eq!(Language::of("为什么"), Language::Zh);
        assert_eq!(Language::of("why 10:40"), Language::En);
        // Times need two minute digits and a real clock.
        assert_eq!(find_time("at 25:10 or 7:5"), None);
    }

    #[test]
    fn unreadable_model_text_is_caught() {
        let draft = "filler stopped at 13:00 for 25.0 min.";
        assert_eq!(unreadable("The filler stopped at 13:00, for 25.0 min.", draft), None);
        assert!(unreadable("FACTS:\nfiller stopped", draft).is_some());
        assert!(unreadable("Filler stopped at 13:00.\nFiller stopped at 13:00.", draft).is_some());
        assert!(unreadable("状态：runningＨＨＨＨＨＨＨ", draft).is_some());
        assert!(unreadable(&"filler ".repeat(40), draft).is_some());
    }
}
