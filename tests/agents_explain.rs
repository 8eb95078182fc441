//! The anomaly explainer over the demo shift: linesim's 8-hour history is
//! backfilled into a real store, the analytics stage is replayed over it (as the
//! daemon runs it live), and every anomaly and alarm is explained. Each injected
//! fault of a machine must be explained by the failure mode of the maintenance
//! manual that the ground truth names, and every explanation must be grounded.

use std::path::Path;

use linepilot::agents::{explain, ToolContext};
use linepilot::domain::EventKind;
use linepilot::store::events::EventQuery;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const MIN: i64 = 60_000_000_000;

#[test]
fn every_machine_fault_is_explained_by_its_failure_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = linepilot::config::Config::load(&root().join("configs/demo.toml")).expect("demo config");
    let cal = linepilot::config::Calendar::new(&cfg).expect("calendar");
    let store = linepilot::service::open_store(&cfg, Some(dir.path().to_path_buf()), false).expect("store");
    let scenario = root().join("configs/scenarios/demo.toml");
    let truth = linepilot::service::demo::backfill(&store, &scenario, 8.0, |_, _| {}).expect("backfill");
    let start = linesim::line::scenario::Scenario::load(&scenario)
        .and_then(|s| s.start_ns("demo.toml"))
        .expect("scenario start");
    let end = start + 8 * 60 * MIN;
    let stats = linepilot::analytics::replay::replay(&store, &cfg, start, end, |_| {}).expect("replay");
    eprintln!("replay: {stats:?}");
    assert!(
        stats.events.get("alarm").copied().unwrap_or(0) > 0 && stats.events.get("anomaly").copied().unwrap_or(0) > 0
    );

    let ctx = ToolContext::at_newest_data(&store, &cfg, &cal);
    let t = std::time::Instant::now();
    let xs = explain::explain_pending(&ctx, start, end + 1, usize::MAX).expect("explain");
    eprintln!("{} explanations in {:.2} s", xs.len(), t.elapsed().as_secs_f64());
    // All are stored, grounded and name their facts.
    let q = EventQuery { kinds: vec![EventKind::Anomaly, EventKind::Alarm], ..Default::default() };
    let left: Vec<_> =
        store.events().unexplained(&q).expect("query").into_iter().filter(explain::explainable).collect();
    assert!(left.is_empty(), "{} explainable events left unexplained", left.len());
    for x in &xs {
        assert!(x.review.passed(), "ungrounded {:?} in:\n{}", x.review.ungrounded, x.text);
        assert!(x.facts.iter().any(|f| f.tool == "event"), "{x:?}");
        let stored = store.events().explanation(x.event_id).expect("read").expect("stored");
        assert_eq!(stored.text, x.text);
    }

    // (fault, expected failure mode, how soon after the fault's start an explanation must name it)
    let expected = [
        ("valve_drift", "fill_valve_drift", 150 * MIN),
        ("stuck_sensor", "product_temp_sensor", 10 * MIN),
        ("bearing_wear", "bearing_wear", 300 * MIN),
        ("jam", "jam", 2 * MIN),
        ("heater_degradation", "heater_degradation", 45 * MIN),
    ];
    let mut checked = 0;
    for r in truth.iter().filter(|r| r["kind"] == "fault_start") {
        let fault = r["details"]["fault"].as_str().unwrap_or_default();
        let asset = r["asset"].as_str().unwrap_or_default();
        let ts = r["ts_ns"].as_i64().expect("ts_ns");
        let Some((_, mode, within)) = expected.iter().find(|(f, _, _)| *f == fault) else { continue };
        let signals: Vec<&str> = r["details"]["signals"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
            .unwrap_or_default();
        let found = xs.iter().find(|x| {
            let e = store.events().get(x.event_id).ok().flatten().expect("event");
            x.asset.as_deref() == Some(asset)
                && e.ts >= ts
                && e.ts <= ts + within
                && x.likely.first().is_some_and(|l| {
                    // The right mode, shown by the fault's own signals or code.
                    l.failure_mode == *mode
                        && l.matched.iter().any(|m| {
                            signals.iter().any(|s| s == m)
                                || r["details"]["fault_code"].as_i64().is_some_and(|c| *m == format!("fault_{c}"))
                        })
                })
        });
        let Some(x) = found else {
            let near: Vec<String> = xs
                .iter()
                .filter(|x| x.asset.as_deref() == Some(asset))
                .map(|x| {
                    format!(
                        "{} {:?}: {}",
                        x.at["at"],
                        x.likely.first().map(|l| &l.failure_mode),
                        x.text.lines().next().unwrap_or_default()
                    )
                })
                .collect();
            panic!(
                "{fault} on {asset} at {}: no explanation names {mode}; explanations of {asset}:\n{}",
                r["ts"],
                near.join("\n")
            );
        };
        eprintln!("{fault} on {asset}:\n{}\n", x.text);
        assert!(!x.checks.is_empty() && x.text.contains("Checks:"), "{}", x.text);
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} faults checked");
    // Tags that moved with an anomaly are named (the `correlated` tool), and the reviewer passed them.
    let moved = xs.iter().filter(|x| x.text.contains("Moved with it on this machine:")).count();
    eprintln!("{moved} explanations name tags that moved with the anomaly");
    assert!(moved > 0 && xs.iter().any(|x| x.facts.iter().any(|f| f.tool == "correlated")));

    // Two periods compared: the worn capper bearing vibrates more in its 6th hour than in its 1st.
    let t = |h: i64| linepilot::api::query::format_time(start + h * 60 * MIN);
    let c = linepilot::agents::tools::run(
        &ctx,
        "compare",
        &serde_json::json!({ "tag": "capper.vib_de_rms", "first": { "from": t(1), "to": t(2) }, "second": { "from": t(6), "to": t(7) } }),
    )
    .expect("compare");
    assert!(c.result["change"]["mean"].as_f64().is_some_and(|d| d > 0.5), "{}", c.result);
    let c = linepilot::agents::tools::run(
        &ctx,
        "compare",
        &serde_json::json!({ "asset": "filler", "first": { "from": t(0), "to": t(1) }, "second": { "from": t(6), "to": t(7) } }),
    )
    .expect("compare OEE");
    assert!(c.result["change"]["oee_pct"].is_number(), "{}", c.result);
    // No maintenance recorded yet.
    let h = linepilot::agents::tools::run(&ctx, "maintenance_history", &serde_json::json!({ "asset": "capper" }))
        .expect("history");
    assert_eq!(h.result["done"].as_array().map(Vec::len), Some(0));

    // A comms loss (the history has no quality codes, so one is stored as the alarm
    // engine writes it) says what to check and blames no failure mode.
    let e = linepilot::domain::Event {
        id: 0,
        ts: end - 10 * MIN,
        asset: Some("conveyor1".into()),
        kind: EventKind::Alarm,
        severity: 250,
        message: "conveyor1.speed comms loss: no good value for 20 s (alarm, low)".into(),
        details: serde_json::json!({ "tag": "conveyor1.speed", "condition": "comms_loss", "transition": "activated" }),
    };
    let id = store.events().append(&e).expect("append");
    let x = explain::explain(&ctx, &linepilot::domain::Event { id, ..e }).expect("explain");
    assert!(x.text.contains("stopped answering") && x.likely.is_empty() && x.review.passed(), "{x:?}");
}
