//! The demo scenario's 8-hour history: deterministic, physically consistent,
//! and every fault in the ground truth visible in the signals it affects.

use std::collections::HashMap;
use std::path::PathBuf;

use linesim::line::history;
use linesim::line::scenario::Scenario;

fn demo_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios/demo.toml")
}

fn demo() -> Scenario {
    Scenario::load(&demo_path()).expect("demo scenario loads")
}

const H: i64 = 3_600_000_000_000;
const S: i64 = 1_000_000_000;

fn run(sc: &Scenario, ns: i64) -> (Vec<u8>, Vec<u8>) {
    let (mut lp, mut truth) = (Vec::new(), Vec::new());
    let stats = history::run(sc, "demo.toml", ns, &mut lp, &mut truth, |_, _| {}).expect("io").expect("scenario");
    assert!(stats.samples > 0);
    (lp, truth)
}

#[test]
fn same_seed_same_bytes_other_seed_differs() {
    let sc = demo();
    let a = run(&sc, H / 2);
    let b = run(&sc, H / 2);
    assert!(a.0 == b.0, "line protocol differs between two runs with the same seed");
    assert!(a.1 == b.1, "ground truth differs between two runs with the same seed");
    let mut other = sc.clone();
    other.seed += 1;
    let c = run(&other, H / 2);
    assert!(a.0 != c.0, "a different seed gives the same line protocol");
}

/// Samples of one series: (ts, value).
type Series = Vec<(i64, f64)>;

struct History {
    series: HashMap<String, Series>,
    truth: Vec<serde_json::Value>,
    start: i64,
}

impl History {
    fn get(&self, name: &str) -> &Series {
        self.series.get(name).unwrap_or_else(|| panic!("no series {name}"))
    }
    /// Samples of `name` in [from, to).
    fn window(&self, name: &str, from: i64, to: i64) -> Vec<(i64, f64)> {
        self.get(name).iter().copied().filter(|(t, _)| *t >= from && *t < to).collect()
    }
    fn at(&self, name: &str, ts: i64) -> Option<f64> {
        self.get(name).iter().find(|(t, _)| *t == ts).map(|(_, v)| *v)
    }
}

fn parse(lp: &[u8], truth: &[u8]) -> History {
    let text = std::str::from_utf8(lp).expect("utf-8");
    let mut series: HashMap<String, Series> = HashMap::new();
    for line in text.lines() {
        let (meas, rest) = line.split_once(' ').expect("measurement");
        let (field, rest) = rest.split_once('=').expect("field");
        let (value, ts) = rest.rsplit_once(' ').expect("timestamp");
        let v = match value {
            "true" => 1.0,
            "false" => 0.0,
            v => v.trim_end_matches('i').parse::<f64>().unwrap_or_else(|_| panic!("bad value in `{line}`")),
        };
        let ts: i64 = ts.parse().expect("ns timestamp");
        series.entry(format!("{meas}.{field}")).or_default().push((ts, v));
    }
    let truth: Vec<serde_json::Value> = std::str::from_utf8(truth)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("ground truth is JSON"))
        .collect();
    let start = truth[0]["ts_ns"].as_i64().expect("ts_ns");
    History { series, truth, start }
}

fn mean(v: &[(i64, f64)]) -> f64 {
    v.iter().map(|x| x.1).sum::<f64>() / v.len().max(1) as f64
}

const MACHINES: [&str; 6] = ["depalletizer", "washer", "filler", "capper", "labeler", "case_packer"];

#[test]
fn eight_hour_history_is_consistent_and_shows_every_fault() {
    let sc = demo();
    let (lp, truth) = run(&sc, 8 * H);
    let h = parse(&lp, &truth);
    assert!(h.series.len() >= 150, "{} series", h.series.len());

    // Counters never decrease.
    for (name, s) in &h.series {
        if name.ends_with("_count")
            || name.ends_with("energy")
            || name.ends_with("run_hours")
            || name.ends_with("energy_total")
        {
            for w in s.windows(2) {
                assert!(w[1].1 >= w[0].1, "{name} decreases at {}: {} -> {}", w[1].0, w[0].1, w[1].1);
            }
        }
    }
    // A machine in fault (at both ends of a second) produces nothing in it; nor does a
    // starved, blocked, idle or setup machine.
    for m in MACHINES {
        let state = h.get(&format!("{m}.state"));
        let good: HashMap<i64, f64> = h.get(&format!("{m}.good_count")).iter().copied().collect();
        let mut checked = 0;
        for w in state.windows(2) {
            let ((t0, s0), (t1, s1)) = (w[0], w[1]);
            if s0 != 1.0 && s1 != 1.0 && s0 == s1 {
                if let (Some(g0), Some(g1)) = (good.get(&t0), good.get(&t1)) {
                    assert_eq!(g0, g1, "{m} in state {s0} counted good bottles between {t0} and {t1}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 100, "{m}: only {checked} stopped seconds checked");
    }

    // Every fault is visible in the signals it affects.
    let faults: Vec<&serde_json::Value> = h.truth.iter().filter(|r| r["kind"] == "fault_start").collect();
    let mut kinds: Vec<&str> = faults.iter().map(|r| r["details"]["fault"].as_str().unwrap_or("")).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), 8, "one of each fault kind in the demo: {kinds:?}");
    let end_of = |r: &serde_json::Value| {
        let kind = r["details"]["fault"].as_str().unwrap_or("");
        let asset = r["asset"].as_str().unwrap_or("");
        let start = r["ts_ns"].as_i64().unwrap_or(0);
        h.truth
            .iter()
            .find(|e| {
                e["kind"] == "fault_end"
                    && e["details"]["fault"] == kind
                    && e["asset"] == asset
                    && e["ts_ns"].as_i64().unwrap_or(0) > start
            })
            .and_then(|e| e["ts_ns"].as_i64())
            .unwrap_or(h.start + 8 * H)
    };
    for f in &faults {
        let d = &f["details"];
        let kind = d["fault"].as_str().unwrap_or("");
        let asset = f["asset"].as_str().unwrap_or("");
        let (t0, t1) = (f["ts_ns"].as_i64().unwrap_or(0), end_of(f));
        // Whole seconds strictly inside the fault.
        let (a, b) = ((t0 / S + 2) * S, (t1 / S - 1) * S);
        match kind {
            "bearing_wear" if d["phase"] == "failure" => {
                assert_eq!(h.at(&format!("{asset}.state"), a), Some(4.0), "{asset} in fault after the bearing failure");
                assert_eq!(h.at(&format!("{asset}.fault_code"), a), Some(201.0));
            }
            "bearing_wear" => {
                let b_ = d["bearing"].as_str().unwrap_or("de");
                let fail = t1; // the failure record ends the wear phase
                let fail = h
                    .truth
                    .iter()
                    .find(|r| r["kind"] == "fault_start" && r["details"]["phase"] == "failure" && r["asset"] == asset)
                    .and_then(|r| r["ts_ns"].as_i64())
                    .unwrap_or(fail);
                for sig in [format!("{asset}.vib_{b_}_rms"), format!("{asset}.vib_{b_}_peak")] {
                    let early = mean(&h.window(&sig, t0, t0 + H / 2));
                    let late = mean(&h.window(&sig, fail - H / 2, fail));
                    assert!(
                        late > 2.0 * early,
                        "{sig}: {early:.3} in the first half hour, {late:.3} before the failure"
                    );
                }
                let other = if b_ == "de" { "nde" } else { "de" };
                let sig = format!("{asset}.vib_{other}_rms");
                let (early, late) = (mean(&h.window(&sig, t0, t0 + H / 2)), mean(&h.window(&sig, fail - H / 2, fail)));
                assert!(late < 1.3 * early, "the healthy bearing {sig} stays: {early:.3} -> {late:.3}");
                let sig = format!("{asset}.bearing_{b_}_temp");
                let (early, late) = (mean(&h.window(&sig, t0, t0 + H / 2)), mean(&h.window(&sig, fail - H / 2, fail)));
                assert!(late > early + 5.0, "{sig}: {early:.1} -> {late:.1} °C");
            }
            "heater_degradation" => {
                let temp = h.window("washer.tank_temp", a, b);
                let min = temp.iter().map(|x| x.1).fold(f64::MAX, f64::min);
                assert!(min < 60.0, "washer.tank_temp stays at {min:.1} °C with a degraded heater");
                let before = h.window("washer.tank_temp", t0 - H / 2, t0);
                assert!(
                    (mean(&before) - 65.0).abs() < 1.0,
                    "tank near its setpoint before the fault: {:.1}",
                    mean(&before)
                );
                let out = h.window("washer.heater_output", a, b);
                assert!(out.iter().any(|x| x.1 >= 99.9), "heater output saturates");
            }
            "valve_drift" => {
                let v = d["valve"].as_u64().unwrap_or(1);
                let sig = format!("filler.fill_level_{v:02}");
                let late = mean(&h.window(&sig, b - H / 4, b));
                assert!(late < 494.0, "{sig} drifted to {late:.1} ml");
                let other = mean(&h.window("filler.fill_level_01", b - H / 4, b));
                assert!((other - 500.0).abs() < 2.0, "valve 1 stays near 500 ml: {other:.1}");
                let rejects = |from: i64, to: i64| {
                    let w = h.window("filler.reject_count", from, to);
                    w.last().map(|x| x.1).unwrap_or(0.0) - w.first().map(|x| x.1).unwrap_or(0.0)
                };
                assert!(rejects(b - H, b) > 3.0 * rejects(t0, t0 + H).max(10.0), "rejects rise with the drift");
            }
            "jam" => {
                assert_eq!(h.at(&format!("{asset}.state"), a), Some(4.0), "{asset} in fault during the jam");
                assert_eq!(h.at(&format!("{asset}.fault_code"), a), Some(101.0));
                let k = MACHINES.iter().position(|m| *m == asset).unwrap_or(0);
                if k > 0 {
                    let up = h.window(&format!("{}.state", MACHINES[k - 1]), a, b);
                    assert!(up.iter().any(|x| x.1 == 3.0), "{} blocked by the jam at {asset}", MACHINES[k - 1]);
                }
                if k < 5 {
                    let down = h.window(&format!("{}.state", MACHINES[k + 1]), a, b);
                    assert!(down.iter().any(|x| x.1 == 2.0), "{} starved by the jam at {asset}", MACHINES[k + 1]);
                }
            }
            "stuck_sensor" => {
                let sig = d["signals"][0].as_str().unwrap_or("");
                let during = h.window(sig, a, b);
                assert!(during.len() > 10);
                assert!(during.iter().all(|x| x.1 == during[0].1), "{sig} frozen");
                let before = h.window(sig, t0 - (b - a), t0);
                assert!(before.iter().any(|x| x.1 != before[0].1), "{sig} moves before it sticks");
            }
            "comms_loss" => {
                let server = d["server"].as_str().unwrap_or("");
                let probe = match server {
                    "modbus" => "washer.tank_temp",
                    "opcua" => "filler.bowl_pressure",
                    _ => "capper.vib_de_rms",
                };
                assert!(h.window(probe, t0 + S, t1).is_empty(), "{probe} has samples while {server} is down");
                assert!(!h.window(probe, t1, t1 + 30 * S).is_empty(), "{probe} resumes after the comms loss");
                assert!(!h.window("filler.speed", t0 + S, t1).is_empty() || server == "opcua");
            }
            "material_starvation" => {
                let s = h.window("depalletizer.state", a, b);
                assert!(s.iter().all(|x| x.1 == 2.0), "depalletizer starved while it has no material");
                let w = h.window("depalletizer.good_count", a + 5 * S, b);
                assert_eq!(w.first().map(|x| x.1), w.last().map(|x| x.1), "depalletizer produces nothing");
            }
            "changeover" => {
                for m in MACHINES {
                    let s = h.window(&format!("{m}.state"), a, b);
                    assert!(s.iter().all(|x| x.1 == 5.0), "{m} in setup during the changeover");
                }
            }
            other => panic!("unexpected fault kind {other}"),
        }
    }

    // Ground-truth state changes agree with the state tags one second later.
    let mut checked = 0;
    for r in h.truth.iter().filter(|r| r["kind"] == "state") {
        let asset = r["asset"].as_str().unwrap_or("");
        let t = r["ts_ns"].as_i64().unwrap_or(0);
        let next = (t / S + 1) * S;
        let to = r["details"]["to"].as_str().unwrap_or("");
        let code = ["idle", "running", "starved", "blocked", "fault", "setup"].iter().position(|s| *s == to);
        let later_change = h.truth.iter().any(|o| {
            o["kind"] == "state"
                && o["asset"] == asset
                && o["ts_ns"].as_i64().unwrap_or(0) > t
                && o["ts_ns"].as_i64().unwrap_or(0) <= next
        });
        if !later_change {
            assert_eq!(h.at(&format!("{asset}.state"), next), code.map(|c| c as f64), "{asset} -> {to} at {t}");
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} state changes checked");

    // The shift summary adds up: state time covers the shift; output matches the counter.
    let summary = h.truth.iter().find(|r| r["kind"] == "shift_summary").expect("shift summary");
    let d = &summary["details"];
    for m in MACHINES {
        let total: f64 =
            d["machines"][m]["state_s"].as_object().expect("state_s").values().filter_map(|v| v.as_f64()).sum();
        assert!((total - 28_800.0).abs() < 1.0, "{m}: {total} s of states in an 8 h shift");
    }
    let packed = h.get("case_packer.good_count");
    let counted = packed.last().map(|x| x.1).unwrap_or(0.0) - packed[0].1;
    let output = d["output"].as_f64().unwrap_or(0.0);
    assert!((counted - output).abs() <= 20.0, "counter says {counted}, summary says {output}");
}
