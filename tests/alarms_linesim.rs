//! The alarm engine over a whole simulated shift: the demo scenario
//! (`configs/scenarios/demo.toml`, 8 h from 06:00, one of each fault kind) is run
//! step by step as `linesim history` runs it, every sample the gateway would
//! store is fed to an [`AlarmEngine`] built from `configs/demo.toml`, and the
//! ground truth says when each fault began. Each injected fault must raise its
//! alarm within a stated delay, and the shift must stay within the ISA-18.2
//! guidance of about 6 annunciated alarms per hour for one operator.
//!
//! The replay (and its comms-loss handling) is `tests/common/replay.rs`.

use std::collections::BTreeMap;

use linepilot::analytics::alarms::AlarmEngine;
use linepilot::domain::Event;

mod common;
use common::replay::{Demo, Step};

const S: i64 = 1_000_000_000;
const MIN: i64 = 60 * S;

#[test]
fn demo_faults_raise_their_alarms_within_bounds() {
    let mut demo = Demo::load();
    let t0 = demo.t0;
    let mut engine = AlarmEngine::new(&demo.config, |name| demo.series(name));
    assert!(engine.len() > 50, "only {} alarms configured", engine.len());

    let mut events: Vec<Event> = Vec::new();
    let mut samples = 0u64;
    let truth = demo.run(8, |step| match step {
        Step::Sample(s) => {
            samples += 1;
            events.extend(engine.on_sample(s));
        }
        Step::Second(now) => events.extend(engine.tick(now)),
    });
    let (faults, end) = (truth.faults, truth.end);

    // Annunciated alarms: activations and re-annunciations (a new fault code).
    let annunciated: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.details["transition"].as_str(), Some("activated" | "code_changed")))
        .collect();
    let mut per_alarm: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &annunciated {
        *per_alarm.entry(e.details["alarm_id"].as_str().unwrap_or("?")).or_default() += 1;
    }
    let first = |id: &str, after: i64| -> Option<i64> {
        annunciated.iter().find(|e| e.details["alarm_id"] == id && e.ts >= after).map(|e| e.ts - after)
    };

    // (fault, asset, phase) -> the alarm that must come, and within what.
    let expected: [(&str, &str, Option<&str>, &str, i64); 13] = [
        ("valve_drift", "filler", None, "filler.fill_level_07:l", 150 * MIN),
        ("valve_drift", "filler", None, "filler.reject_count:rate_of_change", 150 * MIN),
        ("stuck_sensor", "filler", None, "filler.product_temp:flatline", 3 * MIN + 10 * S),
        ("bearing_wear", "capper", None, "capper.vib_de_rms:h", 270 * MIN),
        ("bearing_wear", "capper", Some("failure"), "capper.fault_code:fault_code", 5 * S),
        ("jam", "labeler", None, "labeler.fault_code:fault_code", 5 * S),
        ("comms_loss", "modbus", None, "washer.state:comms_loss", 25 * S),
        ("heater_degradation", "washer", None, "washer.tank_temp:l", 35 * MIN),
        ("heater_degradation", "washer", None, "washer.fault_code:fault_code", 45 * MIN),
        ("comms_loss", "mqtt", None, "capper.vib_de_rms:comms_loss", 35 * S),
        ("comms_loss", "opcua", None, "filler.state:comms_loss", 25 * S),
        ("jam", "filler", None, "filler.fault_code:fault_code", 5 * S),
        ("material_starvation", "depalletizer", None, "", 0),
    ];
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (fault, asset, phase, alarm, within) in expected {
        let Some(f) = faults.iter().find(|f| f.fault == fault && f.asset == asset && f.phase.as_deref() == phase)
        else {
            failures.push(format!("{fault} at {asset}: not in the ground truth"));
            continue;
        };
        if alarm.is_empty() {
            report.push(format!(
                "{fault:<19} {asset:<12} +{:>6.1} min  (no equipment alarm expected)",
                (f.ts - t0) as f64 / MIN as f64
            ));
            continue;
        }
        let delay = first(alarm, f.ts);
        let line = format!(
            "{fault:<19} {asset:<12} +{:>6.1} min  {alarm:<32} after {}",
            (f.ts - t0) as f64 / MIN as f64,
            delay.map(|d| format!("{:.1} s", d as f64 / S as f64)).unwrap_or_else(|| "never".into())
        );
        if delay.is_none_or(|d| d > within) {
            failures.push(format!("{line} (allowed {} s)", within / S));
        }
        report.push(line);
    }
    let shift_h = (end - t0) as f64 / 3600.0 / S as f64;
    let rate = annunciated.len() as f64 / shift_h;
    eprintln!("{samples} samples, {} alarms configured, {} events", engine.len(), events.len());
    eprintln!("fault -> first alarm:\n  {}", report.join("\n  "));
    eprintln!(
        "annunciated alarms: {} in {shift_h:.1} h = {rate:.1}/h (ISA-18.2: ~6/h manageable); per alarm:",
        annunciated.len()
    );
    for (id, n) in &per_alarm {
        eprintln!("  {n:>3} {id}");
    }
    let chattering = events.iter().filter(|e| e.details["transition"] == "chattering").count();
    eprintln!("chattering marked: {chattering}; still standing at the end: {}", engine.snapshot().len());
    assert!(failures.is_empty(), "faults without their alarm:\n  {}", failures.join("\n  "));
    assert!(rate <= 6.0, "{rate:.1} alarms/h is over the ISA-18.2 guidance of ~6/h");
    // Nothing alarms before the first fault (06:00-06:20): no nuisance alarms at start.
    let first_fault = faults.iter().map(|f| f.ts).min().unwrap_or(end);
    let early: Vec<&str> = annunciated.iter().filter(|e| e.ts < first_fault).map(|e| e.message.as_str()).collect();
    assert!(early.is_empty(), "alarms before any fault: {early:?}");
}
