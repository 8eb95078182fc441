//! The maintenance planner against the demo scenario: linesim's history up to +6.5 h
//! (the capper's drive-end bearing wears from +1 h and fails at +7 h) is backfilled
//! into a real store, and the plan is checked against linesim's ground truth.

use std::path::Path;

use linepilot::agents::plan::{self, PlanOptions, Priority, TrendModel};
use linepilot::agents::{plan_eval, tools, Reviewer, ToolContext};
use linepilot::domain::{Event, EventKind};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const HOUR_NS: i64 = 3_600_000_000_000;

/// RFC 4180 records (quoted cells may hold commas, quotes and line breaks).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cell) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    rows
}

#[test]
fn the_capper_bearing_is_planned_before_it_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = linepilot::config::Config::load(&root().join("configs/demo.toml")).expect("demo config");
    let cal = linepilot::config::Calendar::new(&cfg).expect("calendar");
    let store = linepilot::service::open_store(&cfg, Some(dir.path().to_path_buf()), false).expect("store");
    let truth = linepilot::service::demo::backfill(&store, &root().join("configs/scenarios/demo.toml"), 6.5, |_, _| {})
        .expect("backfill");
    let wear = truth
        .iter()
        .find(|r| r["kind"] == "fault_start" && r["asset"] == "capper" && r["details"]["fault"] == "bearing_wear")
        .expect("the capper's bearing wear in the ground truth");
    let failure_at = cal.parse_time(wear["details"]["failure_at"].as_str().expect("failure_at")).expect("time");

    // An alarm the analytics would have logged on the worn bearing: evidence for the
    // work order (the backfill itself writes samples only).
    let ctx = ToolContext::at_newest_data(&store, &cfg, &cal);
    let alarm_at = ctx.now - 20 * 60_000_000_000;
    store
        .events()
        .append(&Event {
            id: 0,
            ts: alarm_at,
            asset: Some("capper".into()),
            kind: EventKind::Alarm,
            severity: 700,
            message: "capper.vib_de_rms:hh active (6.125 mm/s > 4.5)".into(),
            details: serde_json::json!({ "tag": "capper.vib_de_rms", "value": 6.125, "limit": 4.5, "active": true }),
        })
        .expect("event");

    let p = plan::plan(&ctx, &PlanOptions::default()).expect("plan");
    eprintln!("{}", plan::table(&p));
    let true_h = (failure_at - ctx.now) as f64 / HOUR_NS as f64;
    assert!((0.4..0.6).contains(&true_h), "the data end {true_h} h before the failure");

    // The worn bearing is the first work order, high priority, due before the failure,
    // with its band around the true time to failure (measured: 0.32 - 0.76 h around
    // 0.34 h, true 0.50 h), the accelerating model, and the alarm as evidence.
    let first = &p.work_orders[0];
    assert_eq!(
        (first.asset.as_str(), first.failure_mode.as_deref(), first.source),
        ("capper", Some("bearing_wear"), "condition")
    );
    assert_eq!(first.priority, Priority::High);
    assert!(first.parts.iter().any(|x| x.contains("6208-2RS")), "{:?}", first.parts);
    let (low, rul, high) = (
        first.rul_low_hours.expect("low"),
        first.rul_hours.expect("rul"),
        first.rul_high_hours.expect("a bounded band"),
    );
    assert!(low <= true_h && true_h <= high, "band {low} - {high} h, true {true_h} h");
    assert!(low <= rul && rul <= high && high - low < 2.0, "{low} {rul} {high}");
    assert!(first.due_in_hours < true_h, "due in {} h, fails in {true_h} h", first.due_in_hours);
    let capper = p.assets.iter().find(|a| a.asset == "capper").expect("capper health");
    let vib = capper.indicators.iter().find(|i| i.tag == "capper.vib_de_rms").expect("indicator");
    assert_eq!(vib.rul.as_ref().map(|r| r.model), Some(TrendModel::AcceleratingExponential));
    assert!(vib.level.is_some_and(|l| l > 4.5) && vib.growth_pct_per_h.is_some_and(|g| g > 20.0), "{vib:?}");
    assert!(first.evidence.iter().any(|e| e.value == Some(6.125)), "{:?}", first.evidence);
    assert!(first.why.contains("1 alarm or anomaly events"), "{}", first.why);
    assert!(vib.rise >= vib.significant_rise && vib.significant_rise == Some(0.7), "{vib:?}");
    assert!(first.why.contains("(significant from 0.7 mm/s)"), "{}", first.why);

    // Every other bearing is healthy: no condition work order, no RUL within the horizon;
    // their temperatures have a margin to their alarm limit.
    for a in p.assets.iter().filter(|a| a.asset != "capper") {
        for i in a.indicators.iter().filter(|i| i.failure_mode == "bearing_wear") {
            assert!(i.rul.as_ref().is_none_or(|r| r.low_hours > p.horizon_hours), "{i:?}");
            if i.kind == "temperature" {
                assert!(i.margin_to_h.is_some_and(|m| m > 0.0), "{i:?}");
            }
        }
    }
    assert!(!p.work_orders.iter().any(|o| o.asset != "capper" && o.failure_mode.as_deref() == Some("bearing_wear")));

    // Service tasks: hours to due follow from the run-hours tag and the interval.
    let mut seen = 0;
    for a in &p.assets {
        let rh_tag = format!("{}.run_hours", a.asset);
        if cfg.tag(&rh_tag).is_none() {
            assert!(a.run_hours.is_none() && a.services.iter().all(|s| s.basis != "run_hours"), "{a:?}");
            continue;
        }
        let latest = tools::run(&ctx, "tag_latest", &serde_json::json!({ "tag": rh_tag })).expect("tag_latest");
        let stored = latest.result["value"].as_f64().expect("run hours stored");
        assert!((a.run_hours.expect("run hours") - stored).abs() < 0.01, "{}: {:?} vs {stored}", a.asset, a.run_hours);
        for s in a.services.iter().filter(|s| s.basis == "run_hours") {
            seen += 1;
            assert!((s.reading - stored).abs() < 0.01);
            assert!(s.next_due > stored && s.next_due - stored <= s.interval, "{s:?}");
            assert!((s.next_due / s.interval).fract() == 0.0, "{s:?}");
            assert!((s.to_due - (s.next_due - stored)).abs() < 0.01, "{s:?}");
            let rate = a.run_hours_per_h.expect("usage");
            assert!(rate > 0.0 && rate <= 1.0, "{}: {rate} run hours per hour", a.asset);
            let due = s.due_in_hours.expect("due");
            assert!((due - s.to_due / rate).abs() / due < 0.01, "{s:?}");
            let listed = p.work_orders.iter().any(|o| o.asset == a.asset && o.action == s.action);
            assert_eq!(listed, due <= p.horizon_hours, "{s:?}");
        }
    }
    assert!(seen >= 6, "{seen} hour-based service tasks");

    // Ranked by due time.
    assert!(p.work_orders.windows(2).all(|w| w[0].due_in_hours <= w[1].due_in_hours));
    assert!(p.work_orders.iter().enumerate().all(|(i, o)| o.rank == i + 1));

    // Every number of every `why` is in the plan's facts (the plan without the texts);
    // an invented one is caught.
    let facts = p.facts();
    assert!(!facts.result.to_string().contains(&first.why));
    let reviewer = Reviewer::new(std::slice::from_ref(&facts), "", &cfg);
    for o in &p.work_orders {
        let r = reviewer.review(&o.why);
        assert!(r.passed() && r.checked >= 3, "{}: {:?}", o.why, r.ungrounded);
    }
    let invented = first.why.replace(&format!("in {rul} h"), "in 3.75 h");
    assert!(!reviewer.review(&invented).passed(), "{invented}");

    // CSV: the same rows as the JSON.
    let csv = plan::to_csv(&p);
    let rows = parse_csv(&csv);
    assert_eq!(
        rows[0],
        [
            "rank",
            "asset",
            "action",
            "failure_mode",
            "due_by",
            "priority",
            "rul_hours",
            "rul_low_hours",
            "rul_high_hours",
            "parts",
            "why"
        ]
    );
    assert_eq!(rows.len(), p.work_orders.len() + 1);
    let json = serde_json::to_value(&p).expect("json");
    for (row, o) in rows[1..].iter().zip(json["work_orders"].as_array().expect("orders")) {
        assert_eq!(row.len(), 11);
        assert_eq!(row[0], o["rank"].to_string());
        assert_eq!(row[1], o["asset"].as_str().unwrap_or_default());
        assert_eq!(row[2], o["action"].as_str().unwrap_or_default());
        assert_eq!(row[3], o["failure_mode"].as_str().unwrap_or_default());
        assert_eq!(row[4], o["due_by"]["utc"].as_str().unwrap_or_default());
        assert_eq!(row[5], o["priority"].as_str().unwrap_or_default());
        assert_eq!(row[6].parse::<f64>().ok(), o["rul_hours"].as_f64());
        assert_eq!(row[8].parse::<f64>().ok(), o["rul_high_hours"].as_f64());
        assert_eq!(row[10], o["why"].as_str().unwrap_or_default());
    }
    assert!(rows[1][9].contains("; "), "{:?}", rows[1]);

    // The agents' tool gives the same plan.
    let t = tools::run(&ctx, "maintenance_plan", &serde_json::json!({ "asset": "capper" })).expect("tool");
    assert_eq!(t.result["work_orders"][0]["why"], json["work_orders"][0]["why"]);
    assert!(tools::definitions(&cfg).iter().any(|d| d.name == "maintenance_plan"));

    // Earlier: at +4 h the wear's rise is below significance (no work order); from
    // +5 h the bearing is the first condition work order (an active process alarm
    // elsewhere, due now, may rank above it); from +5.5 h the band holds the truth; no
    // healthy bearing is flagged at any of the times (figures in docs/EVALUATION.md).
    let checks = plan_eval::check(&store, &cfg, &cal, &truth, &[4.0, 5.0, 5.5, 6.0, 6.5], &PlanOptions::default())
        .expect("checks");
    eprintln!("{}", plan_eval::markdown(&checks));
    assert_eq!(checks.len(), 5);
    for c in &checks {
        assert!(c.false_alarms.is_empty(), "{c:?}");
        if c.offset_hours < 5.0 {
            assert!(c.rank.is_none(), "{c:?}");
        } else {
            assert!(c.rank.is_some() && c.condition_rank == Some(1), "{c:?}");
        }
        if c.offset_hours >= 5.5 {
            assert!(c.covered, "{c:?}");
        }
    }
    store.close();
}
