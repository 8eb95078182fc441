//! The alarm engine over a whole simulated shift: the demo scenario
//! (`configs/scenarios/demo.toml`, 8 h from 06:00, one of each fault kind) is run
//! step by step as `linesim history` runs it, every sample the gateway would
//! store is fed to an [`AlarmEngine`] built from `configs/demo.toml`, and the
//! ground truth says when each fault began. Each injected fault must raise its
//! alarm within a stated delay, and the shift must stay within the ISA-18.2
//! guidance of about 6 annunciated alarms per hour for one operator.
//!
//! Comms loss: where `linesim history` leaves out a server's samples, the
//! gateway would have written one bad-quality (`BAD_COMMS`) sample per tag when
//! it noticed, so the replay does the same at the first missed sample.

use std::collections::BTreeMap;
use std::path::PathBuf;

use linepilot::analytics::alarms::AlarmEngine;
use linepilot::config::Config;
use linepilot::domain::{Event, Quality, Sample, SeriesId, Value};
use linesim::line::model::Model;
use linesim::line::scenario::Scenario;
use linesim::line::Val;

const S: i64 = 1_000_000_000;
const MIN: i64 = 60 * S;

struct Fault {
    ts: i64,
    asset: String,
    fault: String,
    phase: Option<String>,
}

#[test]
fn demo_faults_raise_their_alarms_within_bounds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("configs/demo.toml")).expect("configs/demo.toml");
    let config = Config::from_str_named(&text, "demo.toml").unwrap_or_else(|e| panic!("demo.toml:\n{e}"));
    let scenario_path = root.join("configs/scenarios/demo.toml");
    let path = scenario_path.display().to_string();
    let scenario = Scenario::load(&scenario_path).expect("demo scenario");
    let t0 = scenario.start_ns(&path).expect("start");
    let mut model = Model::new(&scenario, &path, t0).expect("model");
    let catalog = model.catalog.clone();
    let mut engine = AlarmEngine::new(&config, |name| catalog.find(name).map(|i| SeriesId(i as u32)));
    assert!(engine.len() > 50, "only {} alarms configured", engine.len());

    let hours = 8;
    let steps = hours * 3600 * 10;
    let mut events: Vec<Event> = Vec::new();
    let mut faults: Vec<Fault> = Vec::new();
    let mut down = vec![false; catalog.len()];
    let mut samples = 0u64;
    for step in 0..=steps {
        if step > 0 {
            model.step();
        }
        let now = model.now_ns();
        for (i, was_down) in down.iter_mut().enumerate() {
            if !model.sampled(i) {
                continue;
            }
            let sample = if model.tag_down(i) {
                if *was_down {
                    continue;
                }
                *was_down = true;
                Sample { series: SeriesId(i as u32), ts: now, value: Value::F64(0.0), quality: Quality::BAD_COMMS }
            } else {
                *was_down = false;
                let value = match model.values()[i] {
                    Val::F64(x) => Value::F64(x),
                    Val::I64(x) => Value::I64(x),
                    Val::Bool(b) => Value::Bool(b),
                };
                Sample { series: SeriesId(i as u32), ts: now, value, quality: Quality::GOOD }
            };
            samples += 1;
            events.extend(engine.on_sample(&sample));
        }
        if step % 10 == 0 {
            events.extend(engine.tick(now));
        }
        for r in model.drain_truth() {
            if r.kind == "fault_start" {
                faults.push(Fault {
                    ts: r.ts_ns,
                    asset: r.asset.clone(),
                    fault: r.details["fault"].as_str().unwrap_or_default().to_string(),
                    phase: r.details["phase"].as_str().map(String::from),
                });
            }
        }
    }
    let end = model.now_ns();

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
