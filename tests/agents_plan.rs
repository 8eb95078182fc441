//! The maintenance planner against the demo scenario: linesim's history up to +6.5 h
//! (the capper's drive-end bearing wears from +1 h and fails at +7 h) is backfilled
//! into a real store, and the plan is checked against linesim's ground truth.

use std::path::Path;
use std::time::Instant;

use linepilot::agents::plan::{self, PlanOptions};
use linepilot::agents::{Reviewer, ToolContext};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const HOUR_NS: i64 = 3_600_000_000_000;

#[test]
fn the_capper_bearing_is_planned_before_it_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = linepilot::config::Config::load(&root().join("configs/demo.toml")).expect("demo config");
    let cal = linepilot::config::Calendar::new(&cfg).expect("calendar");
    let store = linepilot::service::open_store(&cfg, Some(dir.path().to_path_buf()), false).expect("store");
    let truth = linepilot::service::demo::backfill(&store, &root().join("configs/scenarios/demo.toml"), 6.5, |_, _| {})
        .expect("backfill");
    let start = truth.iter().find(|r| r["kind"] == "run_start").and_then(|r| r["ts_ns"].as_i64()).expect("run start");
    let wear = truth
        .iter()
        .find(|r| r["kind"] == "fault_start" && r["asset"] == "capper" && r["details"]["fault"] == "bearing_wear")
        .expect("the capper's bearing wear in the ground truth");
    let failure_at = cal.parse_time(wear["details"]["failure_at"].as_str().expect("failure_at")).expect("time");

    let newest = ToolContext::at_newest_data(&store, &cfg, &cal).now;
    for at_h in [4.0, 5.0, 5.5, 6.0, 6.5] {
        let now = (start + (at_h * HOUR_NS as f64) as i64).min(newest);
        let ctx = ToolContext { store: &store, config: &cfg, calendar: &cal, now };
        for lookback in [1.0, 2.0] {
            let t0 = Instant::now();
            let p =
                plan::plan(&ctx, &PlanOptions { lookback_hours: lookback, ..PlanOptions::default() }).expect("plan");
            let took = t0.elapsed();
            let true_h = (failure_at - now) as f64 / HOUR_NS as f64;
            let capper = p.assets.iter().find(|a| a.asset == "capper").expect("capper");
            let ind = capper.indicators.iter().find(|i| i.tag == "capper.vib_de_rms").expect("vib");
            eprintln!(
                "at +{at_h} h lookback {lookback} h: true {true_h:.2} h; level {:?} growth {:?} %/h rul {:?} ({} ms, {} orders)",
                ind.level,
                ind.growth_pct_per_h,
                ind.rul.as_ref().map(|r| (r.low_hours, r.hours, r.high_hours, r.effective_samples)),
                took.as_millis(),
                p.work_orders.len()
            );
            if at_h == 6.5 && lookback == 2.0 {
                eprintln!("{}", plan::table(&p));
                for a in &p.assets {
                    for i in &a.indicators {
                        if i.kind == "condition" {
                            eprintln!(
                                "  {} {:?} {:?} {:?}",
                                i.tag,
                                i.level,
                                i.growth_pct_per_h,
                                i.rul.as_ref().map(|r| (r.low_hours, r.hours, r.high_hours))
                            );
                        }
                    }
                }
                let facts = p.facts();
                let reviewer = Reviewer::new(std::slice::from_ref(&facts), "", &cfg);
                for o in &p.work_orders {
                    let r = reviewer.review(&o.why);
                    assert!(r.passed(), "{}: {:?}", o.why, r.ungrounded);
                }
            }
        }
    }
    store.close();
}
