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
    assert!(
        r.review.passed() && r.review.checked > 200,
        "ungrounded: {:?} (checked {})",
        r.review.ungrounded,
        r.review.checked
    );

    // Every fault appears: its machine (or protocol source) named on a line with a
    // time from its start to its detection bound.
    let coverage = report::fault_coverage(&md, &truth, &cal);
    assert!(coverage.len() >= 12, "{coverage:?}");
    let missing: Vec<_> = coverage.iter().filter(|c| !c.2).collect();
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
