//! The shift report of the demo shift: linesim's 8-hour history backfilled, the
//! analytics replayed and explained as the daemon would, then the report written.
//! Every fault in linesim's ground truth must appear in it (its machine or source
//! named with a time inside the fault), every number in it must trace to a tool
//! result (the reviewer, over every paragraph and table cell), and the HTML must be
//! one self-contained file with its charts.

use std::path::Path;

use linepilot::agents::{explain, report, ToolContext};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const MIN: i64 = 60_000_000_000;

#[test]
fn demo_shift_report_names_every_fault_and_every_number_traces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = linepilot::config::Config::load(&root().join("configs/demo.toml")).expect("demo config");
    let cal = linepilot::config::Calendar::new(&cfg).expect("calendar");
    let store = linepilot::service::open_store(&cfg, Some(dir.path().join("data")), false).expect("store");
    let scenario = root().join("configs/scenarios/demo.toml");
    let truth = linepilot::service::demo::backfill(&store, &scenario, 8.0, |_, _| {}).expect("backfill");
    let start = linesim::line::scenario::Scenario::load(&scenario)
        .and_then(|s| s.start_ns("demo.toml"))
        .expect("scenario start");
    let end = start + 480 * MIN;
    linepilot::analytics::replay::replay(&store, &cfg, start, end, |_| {}).expect("replay");
    // "Now" is just after the shift, as when the daemon writes it at shift end.
    let ctx = ToolContext { store: &store, config: &cfg, calendar: &cal, now: end + MIN };
    explain::explain_pending(&ctx, start, end + 1, usize::MAX).expect("explain");

    let label = cal.shifts_between(start, start + 1).expect("calendar")[0].label.clone();
    let mut steps = Vec::new();
    let t = std::time::Instant::now();
    let r = report::write(&ctx, &label, None, |step, f| steps.push((step.to_string(), f))).expect("report");
    eprintln!("report of {label} in {:.2} s", t.elapsed().as_secs_f64());
    let md = report::markdown(&r);
    eprintln!("{md}");
    assert!(steps.len() >= 8 && steps.last().is_some_and(|s| s.1 == 1.0), "progress: {steps:?}");
    assert!(r.review.passed() && r.review.checked > 200, "ungrounded: {:?} (checked {})", r.review.ungrounded, r.review.checked);

    // Every fault appears: its machine (or protocol source) named on a line with a
    // time from its start to its detection bound.
    let lines: Vec<&str> = md.lines().collect();
    let hhmm = |ts: i64| {
        let d = cal.ts_to_local(ts);
        d.hour() as i64 * 60 + d.minute() as i64
    };
    let times_in = |l: &str| -> Vec<i64> {
        l.as_bytes()
            .windows(5)
            .filter(|w| w[2] == b':' && w.iter().enumerate().all(|(i, c)| i == 2 || c.is_ascii_digit()))
            .filter_map(|w| {
                let s = std::str::from_utf8(w).ok()?;
                Some(s[..2].parse::<i64>().ok()? * 60 + s[3..].parse::<i64>().ok()?)
            })
            .collect()
    };
    let mut missing = Vec::new();
    for f in truth.iter().filter(|r| r["kind"] == "fault_start") {
        let fault = f["details"]["fault"].as_str().unwrap_or_default();
        let ts = f["ts_ns"].as_i64().expect("ts_ns");
        let (who, bound) = match fault {
            "comms_loss" => (format!("linesim-{}", f["details"]["server"].as_str().unwrap_or_default()), 2),
            "changeover" => ("setup".to_string(), 2),
            "valve_drift" => ("fill_level_07".to_string(), 150),
            "bearing_wear" => ("capper".to_string(), 300),
            "heater_degradation" => ("washer".to_string(), 45),
            _ => (f["asset"].as_str().unwrap_or_default().to_string(), 5),
        };
        let (lo, hi) = (hhmm(ts - MIN), hhmm(ts + bound * MIN));
        let hit = lines.iter().any(|l| l.contains(&who) && times_in(l).iter().any(|t| *t >= lo && *t <= hi));
        if !hit {
            missing.push(format!("{fault} ({who}) at {}", f["ts"]));
        }
    }
    assert!(missing.is_empty(), "faults missing from the report: {missing:?}");

    // The HTML is one file: inline styles and SVG charts, no script, nothing fetched.
    let html = report::html(&r, "UTC");
    assert!(html.matches("<svg").count() >= 5, "charts");
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    let saved = report::save(&r, &dir.path().join("reports"), "UTC").expect("save");
    for f in ["report.md", "report.html", "report.json"] {
        assert!(saved.join(f).metadata().expect(f).len() > 1000, "{f}");
    }
}
