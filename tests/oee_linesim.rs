//! OEE and downtime computed from the store against linesim's ground truth.
//!
//! The demo scenario's history (shift 2026-11-28/A, 06:00-14:00 UTC, one of each
//! fault) is generated in-process as `linesim history` would write it; the
//! samples of every machine's state, fault code, good and reject counters are
//! imported into a store as `linepilot import` would; then `analytics::oee`
//! replays them through the line-state tracker. Per machine, OEE, availability,
//! performance and quality must equal the ground truth's (derived from its
//! `shift_summary` with the standard definitions) within 1 % relative, and so
//! must the run time and every downtime cause of at least a minute; shorter
//! causes within 2 s (states are sampled once a second).
//!
//! `LINEPILOT_OEE_HOURS` (default 8, the whole shift) shortens the run; the
//! window is then the partial shift the truth summarises.

mod common;

use std::collections::BTreeMap;

use linepilot::analytics::oee::{self, AssetOee};
use linepilot::config::{Calendar, Config};
use linepilot::domain::MachineState;

const MACHINES: [&str; 6] = ["depalletizer", "washer", "filler", "capper", "labeler", "case_packer"];

struct Truth {
    planned_s: f64,
    run_s: f64,
    good: f64,
    reject: f64,
    ideal: f64,
    causes: BTreeMap<String, f64>,
}

impl Truth {
    fn availability(&self) -> f64 {
        self.run_s / self.planned_s
    }
    fn performance(&self) -> f64 {
        (self.good + self.reject) / (self.ideal / 60.0) / self.run_s
    }
    fn quality(&self) -> f64 {
        self.good / (self.good + self.reject)
    }
    fn oee(&self) -> f64 {
        self.availability() * self.performance() * self.quality()
    }
}

fn rel(ours: f64, truth: f64) -> f64 {
    if truth == 0.0 {
        ours.abs()
    } else {
        (ours - truth).abs() / truth.abs()
    }
}

#[test]
fn shift_a_oee_and_downtime_match_the_ground_truth() {
    let hours: f64 = std::env::var("LINEPILOT_OEE_HOURS").ok().and_then(|s| s.parse().ok()).unwrap_or(8.0);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = Config::load(&root.join("configs/demo.toml")).unwrap_or_else(|e| panic!("{e}"));
    let series: Vec<String> = MACHINES
        .iter()
        .flat_map(|m| ["state", "fault_code", "good_count", "reject_count"].map(|s| format!("{m}.{s}")))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let started = std::time::Instant::now();
    let (store, truth) = common::demo_history_in_store(&config, dir.path(), hours, &series);
    eprintln!("history ({hours} h) generated and imported in {:.1} s", started.elapsed().as_secs_f64());

    let summary = truth
        .iter()
        .find(|r| r["kind"] == "shift_summary" && r["details"]["shift"] == "2026-11-28/A")
        .expect("the truth summarises shift 2026-11-28/A");
    let d = &summary["details"];
    let cal = Calendar::new(&config).expect("calendar");
    let from = cal.parse_time(d["from"].as_str().expect("from")).expect("from time");
    let to = cal.parse_time(d["to"].as_str().expect("to")).expect("to time");
    let report = if hours >= 8.0 {
        let r = oee::shift_oee(&store, &config, &cal, "2026-11-28/A").expect("shift OEE");
        assert_eq!((r.window.from, r.window.to), (from, to), "the calendar's shift is the truth's");
        r
    } else {
        oee::window_oee(&store, &config, &cal, from, to, Some("2026-11-28/A".into())).expect("window OEE")
    };
    let planned_truth = d["duration_s"].as_f64().expect("duration") - d["planned_stop_s"].as_f64().expect("stops");
    assert!(
        rel(report.window.planned_s, planned_truth) < 0.001,
        "planned time {} vs truth {planned_truth}",
        report.window.planned_s
    );

    println!(
        "shift 2026-11-28/A ({hours} h): planned production time {:.0} s (truth {planned_truth:.0} s)",
        report.window.planned_s
    );
    println!(
        "{:<13} {:>15} {:>15} {:>15} {:>15} {:>13} {:>11}",
        "machine", "OEE ours/truth", "A ours/truth", "P ours/truth", "Q ours/truth", "good o/t", "reject o/t"
    );
    let mut failures = Vec::new();
    let mut check = |what: String, ours: f64, truth: f64, ok: bool| {
        if !ok {
            failures.push(format!("{what}: ours {ours:.4}, truth {truth:.4} ({:.3} % off)", rel(ours, truth) * 100.0));
        }
    };
    for m in MACHINES {
        let md = &d["machines"][m];
        let states = &md["state_s"];
        let t = Truth {
            planned_s: planned_truth,
            run_s: states["running"].as_f64().expect("running"),
            good: md["good"].as_f64().expect("good"),
            reject: md["reject"].as_f64().expect("reject"),
            ideal: md["ideal_rate_per_min"].as_f64().expect("ideal rate"),
            causes: md["downtime_s"]
                .as_object()
                .expect("downtime_s")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
                .collect(),
        };
        let o: &AssetOee = report.assets.iter().find(|a| a.asset == m).expect("asset in report");
        let (oee, a, p, q) = (
            o.oee.expect("oee"),
            o.availability.expect("availability"),
            o.performance.expect("performance"),
            o.quality.expect("quality"),
        );
        println!(
            "{m:<13} {:>6.2}%/{:>6.2}% {:>6.2}%/{:>6.2}% {:>6.2}%/{:>6.2}% {:>6.3}%/{:>6.3}% {:>6}/{:<6} {:>5}/{:<5}",
            oee * 100.0,
            t.oee() * 100.0,
            a * 100.0,
            t.availability() * 100.0,
            p * 100.0,
            t.performance() * 100.0,
            q * 100.0,
            t.quality() * 100.0,
            o.good.unwrap_or(0),
            t.good,
            o.reject.unwrap_or(0),
            t.reject
        );
        check(format!("{m} OEE"), oee, t.oee(), rel(oee, t.oee()) < 0.01);
        check(format!("{m} availability"), a, t.availability(), rel(a, t.availability()) < 0.01);
        check(format!("{m} performance"), p, t.performance(), rel(p, t.performance()) < 0.01);
        check(format!("{m} quality"), q, t.quality(), rel(q, t.quality()) < 0.01);
        check(format!("{m} run time"), o.run_s, t.run_s, rel(o.run_s, t.run_s) < 0.01);
        let good = o.good.unwrap_or(0) as f64;
        check(format!("{m} good"), good, t.good, rel(good, t.good) < 0.01);
        let reject = o.reject.unwrap_or(0) as f64;
        check(
            format!("{m} reject"),
            reject,
            t.reject,
            rel(reject, t.reject) < 0.01 || (reject - t.reject).abs() <= 2.0,
        );
        let ours: BTreeMap<&str, f64> = o.downtime.iter().map(|c| (c.cause.as_str(), c.seconds)).collect();
        let mut line = Vec::new();
        for (cause, secs) in &t.causes {
            let mine = ours.get(cause.as_str()).copied().unwrap_or(0.0);
            line.push(format!("{cause} {mine:.1}/{secs:.1}s"));
            let ok = if *secs >= 60.0 { rel(mine, *secs) < 0.01 } else { (mine - secs).abs() <= 2.0 };
            check(format!("{m} downtime {cause}"), mine, *secs, ok);
        }
        // Nothing we call downtime that the truth does not know (beyond sampling jitter).
        for (cause, secs) in &ours {
            if !t.causes.contains_key(*cause) {
                line.push(format!("{cause} {secs:.1}/-"));
                check(format!("{m} downtime {cause} (not in truth)"), *secs, 0.0, *secs <= 2.0);
            }
        }
        println!("    downtime ours/truth: {}", line.join(", "));
        if let Some(f) = o.downtime.iter().find(|c| c.cause.starts_with("fault")) {
            println!(
                "    failures {} MTBF {:.0} s MTTR {:.0} s (first fault cause {})",
                o.failures,
                o.mtbf_s.unwrap_or(0.0),
                o.mttr_s.unwrap_or(0.0),
                f.cause
            );
        }
    }
    let line = report.lines.iter().find(|l| l.line == "line1").expect("line1");
    assert_eq!(line.key_asset, "filler");
    println!("line1 OEE (key machine filler): {:.2}%", line.oee.oee.unwrap_or(0.0) * 100.0);
    assert!(failures.is_empty(), "figures off the ground truth:\n{}", failures.join("\n"));

    // The faults the scenario plants are seen as failures with their codes.
    let filler = report.assets.iter().find(|a| a.asset == "filler").expect("filler");
    if hours >= 8.0 {
        assert!(filler.downtime.iter().any(|c| c.cause == "fault_101"), "the filler jam (fault 101)");
        let capper = report.assets.iter().find(|a| a.asset == "capper").expect("capper");
        assert!(capper.downtime.iter().any(|c| c.cause == "fault_201" && c.seconds > 20.0 * 60.0), "bearing repair");
        assert!(filler.state_s.get(&MachineState::Setup).copied().unwrap_or(0.0) > 15.0 * 60.0, "changeover");
    }
    // The downtime query agrees with the OEE report.
    let dt = oee::downtime(&store, &config, &cal, from, to, Some("filler")).expect("downtime");
    assert_eq!(dt.assets.len(), 1);
    assert!((dt.assets[0].downtime_s - filler.downtime_s).abs() < 1e-6);
    assert_eq!(dt.assets[0].stops.iter().map(|s| s.seconds).sum::<f64>().round(), filler.downtime_s.round());
    store.close();
}
