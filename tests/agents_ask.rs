//! Operator questions against the demo shift: linesim's 8-hour history is backfilled
//! into a real store (the demo's own backfill path), the questions are generated
//! from linesim's ground truth, and every answer is checked against it: entities
//! exactly, numbers within tolerance, and no number the tools did not give.

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

    let qs = eval::questions(&truth, &cfg);
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
    store.close();
}
