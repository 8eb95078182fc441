//! Operator questions against the demo shift: linesim's 8-hour history is backfilled
//! into a real store (the demo's own backfill path), the questions are generated
//! from linesim's ground truth, and every answer is checked against it: entities
//! exactly, numbers within tolerance, and no number the tools did not give.

mod common;

use std::path::Path;

use linepilot::agents::ask::{self, AskOptions, Intent, Language};
use linepilot::agents::{eval, ToolContext};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn demo_shift_questions_are_answered_from_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = linepilot::config::Config::load(&root().join("configs/demo.toml")).expect("demo config");
    let cal = linepilot::config::Calendar::new(&cfg).expect("calendar");
    let store = linepilot::service::open_store(&cfg, Some(dir.path().to_path_buf()), false).expect("store");
    let truth = linepilot::service::demo::backfill(&store, &root().join("configs/scenarios/demo.toml"), 8.0, |_, _| {})
        .expect("backfill");
    let ctx = ToolContext::at_newest_data(&store, &cfg, &cal);

    let qs = eval::questions(&truth, &cfg, &cal);
    let zh = qs.iter().filter(|q| Language::of(&q.text) == Language::Zh).count();
    assert!(qs.len() >= 60 && zh >= 25, "{} questions, {zh} in Chinese", qs.len());
    let report = eval::run(&ctx, &qs, None, |_, _| {}).expect("eval runs");
    eprintln!("{}", eval::markdown(&report));
    assert!(report.accuracy >= 0.9, "accuracy {:.3}\n{}", report.accuracy, eval::markdown(&report));
    assert_eq!(report.ungrounded, 0, "{}", eval::markdown(&report));

    // The filler was blocked at 13:00 because the capper was down with fault 201:
    // the answer must say so, and name the facts it used.
    let capper = truth
        .iter()
        .find(|r| r["kind"] == "fault_start" && r["asset"] == "capper" && r["details"]["fault_code"].is_i64())
        .expect("a capper fault in the ground truth");
    let at = &capper["ts"].as_str().expect("ts")[11..16];
    let code = capper["details"]["fault_code"].as_i64().expect("code");
    let a = ask::ask(&ctx, &format!("Why did the filler stop at {at}?"), &AskOptions::default()).expect("answer");
    assert_eq!(a.intent, Intent::WhyStop { asset: Some("filler".into()), at: Some(at.to_string()) });
    assert!(a.text.contains("blocked") && a.text.contains(&format!("capper fault_{code}")), "{}", a.text);
    assert!(a.facts.iter().any(|f| f.tool == "downtime") && a.review.passed() && a.review.checked >= 4, "{a:?}");

    // A question about a time the machine ran says so instead of inventing a stop.
    let running_at = truth
        .iter()
        .filter(|r| r["kind"] == "state" && r["asset"] == "filler" && r["details"]["to"] == "running")
        .nth(1)
        .and_then(|r| r["ts_ns"].as_i64())
        .expect("a restart of the filler");
    let two_min_later = cal.ts_to_local(running_at + 120_000_000_000);
    let q = format!("why did the filler stop at {:02}:{:02}?", two_min_later.hour(), two_min_later.minute());
    let a = ask::ask(&ctx, &q, &AskOptions::default()).expect("answer");
    assert!(a.text.contains("was not stopped at"), "{q}: {}", a.text);

    // Chinese in, Chinese out; a forced language wins.
    let a = ask::ask(&ctx, "灌装机现在是什么状态？", &AskOptions::default()).expect("answer");
    assert_eq!(a.language, Language::Zh);
    assert!(a.text.contains("状态") && a.text.contains("filler"), "{}", a.text);
    let a = ask::ask(&ctx, "灌装机现在是什么状态？", &AskOptions { language: Some(Language::En) }).expect("answer");
    assert!(a.text.starts_with("State at"), "{}", a.text);

    // The reviewer loop around a model: a writer that invents a number is sent back
    // with what was wrong, then replaced by the template; one that keeps the facts
    // is accepted as written.
    let q = "What was OEE last shift and what cost us most?";
    let template = ask::ask(&ctx, q, &AskOptions::default()).expect("answer");
    let mut seen = Vec::new();
    let mut inventive = |m: &[linepilot::llm::ChatMessage]| -> Result<String, String> {
        seen.push(m.last().map(|x| x.content.clone()).unwrap_or_default());
        Ok(format!("{} OEE will reach 91.5 % tomorrow.", template.text))
    };
    let a = ask::ask_with(&ctx, q, &AskOptions::default(), Some(("inventive", &mut inventive))).expect("answer");
    assert_eq!(a.text, template.text);
    assert!(a.written_by.contains("rejected twice"), "{}", a.written_by);
    assert!(seen.len() == 2 && seen[1].contains("91.5"), "{seen:?}");
    let mut faithful = |_: &[linepilot::llm::ChatMessage]| -> Result<String, String> {
        Ok(format!("In short: {}", template.text.replace("What cost most", "Biggest losses")))
    };
    let a = ask::ask_with(&ctx, q, &AskOptions::default(), Some(("faithful", &mut faithful))).expect("answer");
    assert_eq!(a.written_by, "faithful");
    assert!(a.text.starts_with("In short:") && a.review.passed(), "{}", a.text);
    let mut forgetful =
        |_: &[linepilot::llm::ChatMessage]| -> Result<String, String> { Ok("OEE was fine last shift.".to_string()) };
    let a = ask::ask_with(&ctx, q, &AskOptions::default(), Some(("forgetful", &mut forgetful))).expect("answer");
    assert_eq!(a.text, template.text, "an answer that drops the facts is not kept");

    // The real SmolLM2 phrasing one answer: whatever it writes, what comes out has
    // no ungrounded number and keeps the facts.
    let mut model = linepilot::llm::local::LocalModel::load(
        &common::models::model_path("smollm2-135m"),
        "smollm2-135m",
        1,
        Default::default(),
    )
    .expect("SmolLM2 loads");
    let mut real = |m: &[linepilot::llm::ChatMessage]| -> Result<String, String> {
        let opts = linepilot::llm::local::GenerateOptions { max_tokens: 120, ..Default::default() };
        model.generate(m, &opts, &mut |_| true).map(|c| c.text).map_err(|e| e.to_string())
    };
    let a = ask::ask_with(&ctx, q, &AskOptions::default(), Some(("smollm2-135m", &mut real))).expect("answer");
    assert!(a.review.passed(), "{a:?}");
    assert!(a.text.contains("capper") && a.text.contains("fault_"), "{}", a.text);
    eprintln!("SmolLM2 ({}): {}", a.written_by, a.text);

    // A question none of the router's intents covers: SmolLM2 picks the tool under the
    // tool-call schema (constrained decoding), the tool runs, and the text is reviewed.
    // Every call must be valid under the schema; a failing call goes back with the error,
    // and after TOOL_STEPS failures the router's fallback answers.
    let calls = std::cell::RefCell::new(Vec::<serde_json::Value>::new());
    let mut choose = |m: &[linepilot::llm::ChatMessage], schema: &serde_json::Value| -> Result<String, String> {
        let opts = linepilot::llm::local::GenerateOptions {
            max_tokens: 256,
            json_schema: Some(schema.clone()),
            ..Default::default()
        };
        let out = model.generate(m, &opts, &mut |_| true).map(|c| c.text).map_err(|e| e.to_string());
        eprintln!("SmolLM2's tool call: {out:?} (after {} messages)", m.len());
        if let Ok(t) = &out {
            calls.borrow_mut().push(serde_json::from_str(t).unwrap_or(serde_json::Value::Null));
        }
        out
    };
    let q = "Tell me about the capper: its failure modes and what to check.";
    assert_eq!(ask::route(q, &cfg), Intent::State { asset: Some("capper".into()) }, "the router has no intent for it");
    let a = ask::ask_full(&ctx, q, &AskOptions::default(), None, Some(&mut choose)).expect("answer");
    let names: Vec<String> = linepilot::agents::tools::definitions(&cfg).into_iter().map(|d| d.name).collect();
    let calls = calls.borrow().clone();
    assert!(!calls.is_empty());
    for c in &calls {
        assert!(c["tool"].as_str().is_some_and(|t| names.iter().any(|n| n == t)) && c["args"].is_object(), "{c}");
    }
    match &a.intent {
        Intent::Open { tool } => assert!(a.facts.len() == 1 && &a.facts[0].tool == tool, "{a:?}"),
        other => {
            assert_eq!(calls.len(), ask::TOOL_STEPS, "the router answers only after every try failed");
            assert_eq!(other, &Intent::State { asset: Some("capper".into()) });
        }
    }
    assert!(a.review.passed() && !a.text.is_empty(), "{a:?}");
    eprintln!("{:?}: {}", a.intent, a.text.lines().take(3).collect::<Vec<_>>().join(" | "));
    // A question that asks for the state is still the router's.
    let a = ask::ask_full(&ctx, "What is the state of the line?", &AskOptions::default(), None, Some(&mut choose))
        .expect("answer");
    assert_eq!(a.intent, Intent::State { asset: None });
    store.close();
}
