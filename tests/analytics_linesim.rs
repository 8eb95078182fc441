//! The whole analytics stage over a simulated shift: the demo shift replayed
//! (`tests/common/replay.rs`) through [`Analytics`] as the daemon runs it — the
//! alarm engine, a streaming detector on every numeric tag and a multivariate
//! detector per asset — with `configs/demo.toml`. Every injected fault must
//! raise an alarm or an anomaly within its bound, and the anomaly events that
//! no fault or break explains (false events) are counted per shift.

use std::sync::Arc;

use linepilot::analytics::alarms::AlarmEngine;
use linepilot::analytics::detect::SignalParams;
use linepilot::analytics::stage::Analytics;
use linepilot::analytics::state::LineState;
use linepilot::domain::{Event, EventKind};
use linepilot::ingest::BoundTag;

mod common;
use common::replay::{Demo, Step};

const S: i64 = 1_000_000_000;

/// (fault, asset, phase, evidence tags, bound in ns).
type Expected<'a> = (&'a str, &'a str, Option<&'a str>, &'a [&'a str], i64);
const MIN: i64 = 60 * S;

#[test]
fn demo_faults_raise_an_alarm_or_anomaly_and_false_events_are_few() {
    let mut demo = Demo::load();
    let t0 = demo.t0;
    let tags: Vec<BoundTag> = demo
        .config
        .tags
        .iter()
        .filter_map(|t| demo.series(&t.name).map(|series| BoundTag { tag: t.clone(), series }))
        .collect();
    assert_eq!(tags.len(), demo.config.tags.len(), "every configured tag is on the simulated line");
    let alarms = AlarmEngine::new(&demo.config, |name| demo.series(name));
    let line_state = LineState::new(&demo.config, |name| demo.series(name));
    let mut analytics = Analytics::new(&tags, SignalParams::default(), Some(Arc::new(parking_lot::Mutex::new(alarms))))
        .with_line_state(line_state);
    let mut events: Vec<Event> = Vec::new();
    let mut batch = Vec::new();
    let truth = demo.run(8, |step| match step {
        Step::Sample(s) => batch.push(s.clone()),
        Step::Second(now) => {
            // The daemon sees committed batches; one simulated second is one batch here.
            events.extend(analytics.on_batch(&batch));
            batch.clear();
            events.extend(analytics.tick(now));
        }
    });
    let end = truth.end;
    // Machine states: every fault that stops a machine shows as a `fault` state change there.
    let states: Vec<&Event> = events.iter().filter(|e| e.kind == EventKind::StateChange).collect();
    eprintln!("state changes: {}", states.len());
    for (asset, code) in [("labeler", 101), ("filler", 101), ("capper", 201), ("washer", 310)] {
        assert!(
            states.iter().any(|e| e.asset.as_deref() == Some(asset)
                && e.details["state"] == "fault"
                && e.details["fault_code"] == code),
            "no `fault` state change with code {code} on {asset}"
        );
    }

    let raised: Vec<&Event> = events
        .iter()
        .filter(|e| match e.kind {
            EventKind::Anomaly => e.details["phase"] != "ended",
            EventKind::Alarm => matches!(e.details["transition"].as_str(), Some("activated" | "code_changed")),
            _ => false,
        })
        .collect();
    let is_comms = |e: &Event| e.details["condition"] == "comms_loss";
    // (fault, asset, phase, evidence, bound): the first alarm or anomaly on one of the
    // evidence tags (any tag of the asset when empty) must come within the bound.
    let valve: &[&str] = &["filler.fill_level_07", "filler.reject_count"];
    let bearing: &[&str] = &["capper.vib_de_rms", "capper.vib_de_peak", "capper.bearing_de_temp"];
    let heater: &[&str] = &["washer.tank_temp", "washer.heater_output", "washer.fault_code"];
    let expected: [Expected; 12] = [
        ("valve_drift", "filler", None, valve, 150 * MIN),
        ("stuck_sensor", "filler", None, &["filler.product_temp"], 4 * MIN),
        ("bearing_wear", "capper", None, bearing, 270 * MIN),
        ("bearing_wear", "capper", Some("failure"), &[], 5 * S),
        ("jam", "labeler", None, &[], 5 * S),
        ("comms_loss", "modbus", None, &[], 35 * S),
        ("heater_degradation", "washer", None, heater, 45 * MIN),
        ("comms_loss", "mqtt", None, &[], 35 * S),
        ("comms_loss", "opcua", None, &[], 35 * S),
        ("jam", "filler", None, &[], 5 * S),
        ("material_starvation", "depalletizer", None, &[], 10 * MIN),
        ("changeover", "line", None, &[], 10 * MIN),
    ];
    // The tag an event is about: an alarm's tag, or an anomaly's opening tag or contributors.
    let about = |e: &Event, tags: &[&str]| {
        let tag = e.details["tag"].as_str().unwrap_or_default();
        tags.contains(&tag)
            || e.details["contributions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| tags.contains(&c["tag"].as_str().unwrap_or_default())))
    };
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (fault, asset, phase, evidence, within) in expected {
        let Some(f) = truth.faults.iter().find(|f| f.fault == fault && f.asset == asset && f.phase.as_deref() == phase)
        else {
            report.push(format!("{fault:<19} {asset:<12} not in this scenario"));
            continue;
        };
        let comms = fault == "comms_loss";
        let first = |kind: EventKind| {
            raised.iter().find(|e| {
                e.kind == kind
                    && e.ts >= f.ts
                    && if comms {
                        is_comms(e)
                    } else if is_comms(e) {
                        false
                    } else if !evidence.is_empty() {
                        about(e, evidence)
                    } else {
                        e.asset.as_deref() == Some(asset) || asset == "line"
                    }
            })
        };
        let alarm = first(EventKind::Alarm);
        let anomaly = if comms { None } else { first(EventKind::Anomaly) };
        let delay = |e: Option<&&Event>| e.map(|e| e.ts - f.ts);
        let best = [delay(alarm), delay(anomaly)].into_iter().flatten().min();
        let show = |e: Option<&&Event>| {
            e.map(|e| {
                format!(
                    "{:.1} min ({})",
                    (e.ts - f.ts) as f64 / MIN as f64,
                    e.message.chars().take(70).collect::<String>()
                )
            })
            .unwrap_or_else(|| "none".into())
        };
        let line = format!(
            "{fault:<19} {asset:<12} +{:>5.1} min: alarm {} | anomaly {}",
            (f.ts - t0) as f64 / MIN as f64,
            show(alarm),
            show(anomaly)
        );
        if best.is_none_or(|d| d > within) {
            failures.push(format!("{line} (allowed {:.1} min)", within as f64 / MIN as f64));
        }
        report.push(line);
    }
    // False anomaly events: outside every fault (from its start to 15 min after its end)
    // and every break (with 15 min either side).
    let explained = |ts: i64| {
        truth.faults.iter().any(|f| ts >= f.ts && ts <= f.end.unwrap_or(end) + 15 * MIN)
            || truth.breaks.iter().any(|&(a, b)| ts >= a - 15 * MIN && ts <= b.min(end) + 15 * MIN)
    };
    let anomalies: Vec<&&Event> = raised.iter().filter(|e| e.kind == EventKind::Anomaly).collect();
    let false_events: Vec<&&Event> = anomalies.iter().copied().filter(|e| !explained(e.ts)).collect();
    let shifts = (end - t0) as f64 / (8.0 * 60.0 * MIN as f64);
    eprintln!("fault -> first alarm / anomaly:\n  {}", report.join("\n  "));
    eprintln!(
        "anomaly events: {} ({} multivariate); unexplained by any fault or break: {} = {:.1} per 8-h shift",
        anomalies.len(),
        anomalies.iter().filter(|e| e.details["test"] == "multivariate").count(),
        false_events.len(),
        false_events.len() as f64 / shifts
    );
    for e in false_events.iter().take(15) {
        eprintln!("  +{:.1} min {}", (e.ts - t0) as f64 / MIN as f64, e.message);
    }
    assert!(failures.is_empty(), "faults without an alarm or anomaly in time:\n  {}", failures.join("\n  "));
    assert!(
        (false_events.len() as f64 / shifts) <= 10.0,
        "{} unexplained anomaly events in {shifts:.1} shifts",
        false_events.len()
    );
}
