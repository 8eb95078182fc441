//! The operator-question evaluation: questions in English and Chinese generated from
//! a linesim run's ground truth (never from the gateway's own figures), asked
//! through [`ask`](super::ask::ask) against the store that holds that run's history,
//! and checked automatically: entities exactly, numbers within stated tolerances.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value as Json;

use super::ask::{ask_with, AskOptions, ModelWriter};
use super::review;
use super::tools::{ToolContext, ToolError};

/// What a correct answer must contain.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expect {
    /// This text (ignoring case).
    Text {
        /// The text.
        text: String,
    },
    /// A clock time `HH:MM`, or a minute either side.
    Time {
        /// The time.
        at: String,
    },
    /// A number within `tolerance`.
    Number {
        /// The true value.
        value: f64,
        /// Allowed absolute difference.
        tolerance: f64,
    },
}

/// One question and what its answer must contain.
#[derive(Clone, Debug, Serialize)]
pub struct Question {
    /// A short id (`why_stop/capper/13:00/en`).
    pub id: String,
    /// The question.
    pub text: String,
    /// What the answer must contain.
    pub expect: Vec<Expect>,
}

/// The outcome of one question.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The question.
    pub question: Question,
    /// The answer's text.
    pub answer: String,
    /// True when every expectation was met.
    pub correct: bool,
    /// Expectations not met.
    pub missed: Vec<Expect>,
    /// Numbers, times or dates the reviewer found no support for.
    pub ungrounded: Vec<String>,
    /// Time to answer, ms.
    pub latency_ms: f64,
}

/// The whole evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Who wrote the answers (`template` or a model).
    pub writer: String,
    /// Answers whose text is the model's (the rest fell back to the template).
    pub written_by_model: usize,
    /// Per question.
    pub outcomes: Vec<Outcome>,
    /// Share of questions answered correctly.
    pub accuracy: f64,
    /// Ungrounded numbers in all answers.
    pub ungrounded: usize,
    /// Median and worst latency, ms.
    pub latency_ms_p50: f64,
    /// Worst latency, ms.
    pub latency_ms_max: f64,
}

/// Chinese names of the demo line's machine kinds, as an operator says them.
fn zh_name(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "filler" => "灌装机",
        "capper" => "旋盖机",
        "washer" => "洗瓶机",
        "labeler" => "贴标机",
        "case_packer" => "装箱机",
        "depalletizer" => "卸垛机",
        _ => return None,
    })
}

/// `HH:MM` of a ground-truth time (`ts_ns`, UTC) in the plant's time zone.
fn hhmm(ts_ns: Option<i64>, calendar: &crate::config::Calendar) -> Option<String> {
    let dt = calendar.ts_to_local(ts_ns?);
    Some(format!("{:02}:{:02}", dt.hour(), dt.minute()))
}

/// Questions from a run's ground truth records (`truth.jsonl`), the plant config and
/// its calendar (times are asked in the plant's zone).
pub fn questions(truth: &[Json], config: &crate::config::Config, calendar: &crate::config::Calendar) -> Vec<Question> {
    let mut qs = Vec::new();
    let text = |t: &str| Expect::Text { text: t.to_string() };
    let num = |value: f64, tolerance: f64| Expect::Number { value, tolerance };
    let kind_of =
        |asset: &str| config.assets.iter().find(|a| a.id == asset).map(|a| a.kind.clone()).unwrap_or_default();
    // Why did X stop at the start of each coded fault?
    for r in truth.iter().filter(|r| r["kind"] == "fault_start") {
        let (Some(asset), Some(code), Some(at)) =
            (r["asset"].as_str(), r["details"]["fault_code"].as_i64(), hhmm(r["ts_ns"].as_i64(), calendar))
        else {
            continue;
        };
        let spoken = asset.replace('_', " ");
        let expect = vec![text(&format!("fault_{code}")), Expect::Time { at: at.clone() }];
        qs.push(Question {
            id: format!("why_stop/{asset}/{at}/en"),
            text: format!("Why did the {spoken} stop at {at}?"),
            expect: expect.clone(),
        });
        if let Some(zh) = zh_name(&kind_of(asset)) {
            qs.push(Question {
                id: format!("why_stop/{asset}/{at}/zh"),
                text: format!("{zh}为什么在{at}停机？"),
                expect,
            });
        }
    }
    // Per machine, from the shift summary.
    let Some(summary) = truth.iter().find(|r| r["kind"] == "shift_summary") else { return qs };
    let breaks: f64 = {
        let starts: Vec<i64> =
            truth.iter().filter(|r| r["kind"] == "break_start").filter_map(|r| r["ts_ns"].as_i64()).collect();
        let ends: Vec<i64> =
            truth.iter().filter(|r| r["kind"] == "break_end").filter_map(|r| r["ts_ns"].as_i64()).collect();
        starts.iter().zip(&ends).map(|(s, e)| (e - s) as f64 / 1e9).sum()
    };
    let planned_s = summary["details"]["duration_s"].as_f64().unwrap_or(0.0) - breaks;
    let mut final_state = std::collections::BTreeMap::new();
    for r in truth.iter().filter(|r| r["kind"] == "state") {
        if let (Some(a), Some(s)) = (r["asset"].as_str(), r["details"]["to"].as_str()) {
            final_state.insert(a.to_string(), s.to_string());
        }
    }
    let mut worst_fault: Option<(f64, String, String)> = None;
    for (asset, m) in summary["details"]["machines"].as_object().into_iter().flatten() {
        let spoken = asset.replace('_', " ");
        let zh = zh_name(&kind_of(asset));
        let running = m["state_s"]["running"].as_f64().unwrap_or(0.0);
        let down: f64 = m["downtime_s"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_f64()).sum();
        for (cause, s) in m["downtime_s"].as_object().into_iter().flatten() {
            let s = s.as_f64().unwrap_or(0.0);
            if cause.starts_with("fault") && worst_fault.as_ref().is_none_or(|w| s > w.0) {
                worst_fault = Some((s, asset.clone(), cause.clone()));
            }
        }
        let mut add = |id: &str, en: String, zh_text: Option<String>, expect: Vec<Expect>| {
            qs.push(Question { id: format!("{id}/{asset}/en"), text: en, expect: expect.clone() });
            if let Some(t) = zh_text {
                qs.push(Question { id: format!("{id}/{asset}/zh"), text: t, expect });
            }
        };
        if planned_s > 0.0 {
            add(
                "availability",
                format!("What was the {spoken}'s OEE last shift?"),
                zh.map(|z| format!("{z}上一班的OEE是多少？")),
                vec![num(100.0 * running / planned_s, 0.2)],
            );
        }
        if let Some(good) = m["good"].as_f64() {
            add(
                "good",
                format!("How many good bottles did the {spoken} make last shift?"),
                zh.map(|z| format!("{z}上一班的合格产量是多少？")),
                vec![num(good, (good * 0.001).max(1.0))],
            );
        }
        if let (Some(good), Some(reject)) = (m["good"].as_f64(), m["reject"].as_f64()) {
            if good + reject > 0.0 {
                add(
                    "quality",
                    format!("What was the {spoken}'s quality rate last shift?"),
                    zh.map(|z| format!("{z}上一班的质量合格率是多少？")),
                    vec![num(100.0 * good / (good + reject), 0.15)],
                );
            }
        }
        add(
            "downtime",
            format!("How long was the {spoken} down last shift?"),
            zh.map(|z| format!("{z}上一班停机多长时间？")),
            vec![num(down / 60.0, 0.2)],
        );
        if let Some(state) = final_state.get(asset) {
            add(
                "state",
                format!("What is the state of the {spoken}?"),
                zh.map(|z| format!("{z}现在是什么状态？")),
                vec![text(state)],
            );
        }
    }
    if let Some((_, asset, cause)) = worst_fault {
        let expect = vec![text(&asset), text(&cause)];
        qs.push(Question {
            id: "what_cost_most/en".into(),
            text: "What was OEE last shift and what cost us most?".into(),
            expect: expect.clone(),
        });
        qs.push(Question {
            id: "what_cost_most/zh".into(),
            text: "上一班的OEE是多少？损失最大的是什么？".into(),
            expect,
        });
    }
    qs
}

fn met(e: &Expect, answer: &str) -> bool {
    match e {
        Expect::Text { text } => answer.to_lowercase().contains(&text.to_lowercase()),
        Expect::Time { at } => {
            let m = at.split_once(':').and_then(|(h, m)| Some(h.parse::<i32>().ok()? * 60 + m.parse::<i32>().ok()?));
            m.is_some_and(|m| {
                [m - 1, m, m + 1]
                    .iter()
                    .any(|x| answer.contains(&format!("{:02}:{:02}", x.rem_euclid(1440) / 60, x.rem_euclid(60))))
            })
        }
        Expect::Number { value, tolerance } => review::numbers(answer).iter().any(|n| (n - value).abs() <= *tolerance),
    }
}

/// Asks every question (the model phrasing the answers when given) and checks the
/// answers. `progress(done, total)` is called after each question.
pub fn run(
    ctx: &ToolContext<'_>,
    questions: &[Question],
    mut model: Option<(&str, &mut ModelWriter<'_>)>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Report, ToolError> {
    let mut outcomes = Vec::new();
    let mut by_model = 0;
    for (i, q) in questions.iter().enumerate() {
        let t = Instant::now();
        let m = model.as_mut().map(|(n, w)| (*n, &mut **w));
        let a = ask_with(ctx, &q.text, &AskOptions::default(), m)?;
        if model.as_ref().is_some_and(|(n, _)| a.written_by == *n) {
            by_model += 1;
        }
        progress(i + 1, questions.len());
        let latency_ms = t.elapsed().as_secs_f64() * 1e3;
        let missed: Vec<Expect> = q.expect.iter().filter(|e| !met(e, &a.text)).cloned().collect();
        outcomes.push(Outcome {
            question: q.clone(),
            correct: missed.is_empty(),
            missed,
            ungrounded: a.review.ungrounded.clone(),
            answer: a.text,
            latency_ms,
        });
    }
    let n = outcomes.len().max(1) as f64;
    let mut lat: Vec<f64> = outcomes.iter().map(|o| o.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    Ok(Report {
        writer: model.as_ref().map_or("template".to_string(), |(n, _)| format!("{n} (template when rejected)")),
        written_by_model: by_model,
        accuracy: outcomes.iter().filter(|o| o.correct).count() as f64 / n,
        ungrounded: outcomes.iter().map(|o| o.ungrounded.len()).sum(),
        latency_ms_p50: lat.get(lat.len() / 2).copied().unwrap_or(0.0),
        latency_ms_max: lat.last().copied().unwrap_or(0.0),
        outcomes,
    })
}

/// The report as Markdown for `docs/EVALUATION.md`.
pub fn markdown(r: &Report) -> String {
    let correct = r.outcomes.iter().filter(|o| o.correct).count();
    let mut s = format!(
        "| writer | questions | correct | accuracy | ungrounded numbers | model's text kept | latency p50 / max |\n|---|---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {:.1} % | {} | {} | {:.0} / {:.0} ms |\n",
        r.writer,
        r.outcomes.len(),
        correct,
        100.0 * r.accuracy,
        r.ungrounded,
        r.written_by_model,
        r.latency_ms_p50,
        r.latency_ms_max
    );
    let wrong: Vec<&Outcome> = r.outcomes.iter().filter(|o| !o.correct).collect();
    if !wrong.is_empty() {
        s.push_str("\nMissed:\n");
        for o in wrong {
            s.push_str(&format!(
                "- `{}` {}: missed {:?}; answer: {}\n",
                o.question.id,
                o.question.text,
                o.missed,
                o.answer.replace('\n', " ")
            ));
        }
    }
    s
}
