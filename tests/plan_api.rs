//! `GET /api/v1/maintenance/plan` and `linepilot plan` through the real binary, on
//! two hand-made hours whose answer is known: a press whose bearing vibration grows
//! 0.5 per hour in ln terms (`y = exp(0.5 t)`, 1 mm/s at the start) rises 1.72 mm/s
//! in the two hours (a quarter of the limit, 1.5 mm/s, is significant) and reaches its
//! 6 mm/s failure limit ln(6 / e) / 0.5 = 1.58 h after the data end, and whose run
//! hours (1450 h, one per hour) are 48 h short of the 100-hour regrease.

mod common;

use std::process::Command;

use common::Daemon;

/// 2026-11-28T00:00:00Z.
const T0: i64 = 1_795_824_000;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let text = format!(
        r#"[site]
name = "Test plant"
time_zone = "UTC"
[store]
data_dir = "{}"
retention_raw = "100y"
[[area]]
id = "a"
name = "Hall"
[[line]]
id = "l1"
name = "Line 1"
area = "a"
[[asset]]
id = "m1"
name = "Press"
line = "l1"
kind = "press"
state = {{ tag = "m1.state", codes = {{ 0 = "idle", 1 = "running" }} }}
[[tag]]
name = "m1.state"
asset = "m1"
description = "state"
value_type = "i64"
[[tag]]
name = "m1.speed"
asset = "m1"
description = "speed"
unit = "1/min"
[[tag]]
name = "m1.vib_rms"
asset = "m1"
description = "bearing vibration"
unit = "mm/s"
[[tag]]
name = "m1.run_hours"
asset = "m1"
description = "running hours"
unit = "h"
[[asset_kind]]
kind = "press"
hours_tag = "run_hours"
[[asset_kind.failure_mode]]
id = "bearing_wear"
name = "Bearing wear"
tags = ["vib_rms"]
parts = ["bearing 6205", "grease"]
failure_limit = 6.0
[[asset_kind.service]]
action = "Regrease the bearing"
every_hours = 100
prevents = "bearing_wear"
parts = ["grease"]
"#,
        dir.join("data").display()
    );
    let path = dir.join("plant.toml");
    std::fs::write(&path, text).expect("writing config");
    path
}

/// Two hours, a sample every 10 s; the vibration has a small deterministic ripple.
fn body() -> String {
    let mut lp = String::new();
    for i in 0..=720 {
        let t = i * 10;
        let h = t as f64 / 3600.0;
        let vib = (0.5 * h).exp() * (1.0 + 0.01 * (i as f64 * 1.7).sin());
        let ns = (T0 + t) * 1_000_000_000;
        lp.push_str(&format!("m1 state=1i,speed=100,vib_rms={vib},run_hours={} {ns}\n", 1450.0 + h));
    }
    lp
}

fn get(d: &Daemon, params: &[(&str, &str)]) -> (u16, String) {
    let mut req = ureq::get(&format!("http://{}/api/v1/maintenance/plan", d.addr));
    for (k, v) in params {
        req = req.query(*k, *v);
    }
    let mut resp = req.config().http_status_as_error(false).build().call().expect("request");
    (resp.status().as_u16(), resp.body_mut().read_to_string().expect("body"))
}

#[test]
fn the_plan_over_api_and_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let daemon = Daemon::start(&cfg);
    assert_eq!(daemon.write(&body()), Ok(204));

    let (status, text) = get(&daemon, &[]);
    assert_eq!(status, 200, "{text}");
    let plan: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let orders = plan["work_orders"].as_array().expect("work orders");
    assert_eq!(orders.len(), 2, "{text}");
    let (bearing, service) = (&orders[0], &orders[1]);
    assert_eq!((bearing["asset"].as_str(), bearing["failure_mode"].as_str()), (Some("m1"), Some("bearing_wear")));
    let rul = bearing["rul_hours"].as_f64().expect("rul");
    let truth = (6.0f64 / 1f64.exp()).ln() / 0.5;
    assert!((rul - truth).abs() < 0.05, "{rul} vs {truth}");
    let (lo, hi) = (bearing["rul_low_hours"].as_f64().expect("low"), bearing["rul_high_hours"].as_f64().expect("high"));
    assert!(lo <= truth && truth <= hi, "{lo} - {hi}");
    assert_eq!(bearing["parts"], serde_json::json!(["bearing 6205", "grease"]));
    assert_eq!(service["action"], "Regrease the bearing");
    let services = &plan["assets"][0]["services"][0];
    assert_eq!((services["next_due"].as_f64(), services["to_due"].as_f64()), (Some(1500.0), Some(48.0)), "{services}");
    assert!((service["due_in_hours"].as_f64().unwrap_or(0.0) - 48.0).abs() < 0.5, "{service}");

    let (status, csv) = get(&daemon, &[("format", "csv")]);
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "rank,asset,action,failure_mode,due_by,priority,rul_hours,rul_low_hours,rul_high_hours,parts,why"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with("1,m1,Repair before failure: Bearing wear") && lines[1].contains(",high,"), "{csv}");
    let (status, _) = get(&daemon, &[("format", "xml")]);
    assert_eq!(status, 400);
    let (status, e) = get(&daemon, &[("asset", "nope")]);
    assert_eq!(status, 400, "{e}");

    // The CLI points at the API while the daemon holds the data, and reads the store after.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_linepilot"))
            .arg("plan")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .expect("run")
    };
    let locked = run(&[]);
    assert!(!locked.status.success());
    assert!(String::from_utf8_lossy(&locked.stderr).contains("/api/v1/maintenance/plan"));
    assert!(daemon.stop().success());
    let out_dir = dir.path().join("out");
    let out = run(&["--out", out_dir.to_str().expect("path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        table.contains("Repair before failure: Bearing wear") && table.contains("parts: bearing 6205; grease"),
        "{table}"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("plan.json")).expect("plan.json")).expect("JSON");
    assert_eq!(written, plan);
    assert_eq!(std::fs::read_to_string(out_dir.join("plan.csv")).expect("plan.csv"), csv);

    // A regrease recorded at 01:00 (1451 run hours): the next is due at 1551 h, 99 h
    // of running after the data end, and the plan says so.
    let record = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_linepilot"))
            .args(["maintenance", "done", "--config"])
            .arg(&cfg)
            .args(args)
            .output()
            .expect("run")
    };
    let done = record(&["--asset", "m1", "--action", "regrease the bearing", "--at", "2026-11-28T01:00:00Z"]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let after: serde_json::Value = serde_json::from_slice(&run(&["--json"]).stdout).expect("JSON");
    let s = &after["assets"][0]["services"][0];
    assert_eq!((s["due_rule"].as_str(), s["last_done_reading"].as_f64()), (Some("history"), Some(1451.0)), "{s}");
    assert_eq!((s["next_due"].as_f64(), s["to_due"].as_f64()), (Some(1551.0), Some(99.0)), "{s}");
    let why = after["work_orders"][1]["why"].as_str().unwrap_or_default();
    assert!(why.contains("last done at 1451 h (01:00 on 2026-11-28)") && why.contains("99 h to go"), "{why}");
    // A bearing change at 01:30: its trend starts afresh, and half an hour of it is no
    // significant rise.
    let done = record(&["--asset", "m1", "--action", "bearing_wear", "--at", "2026-11-28T01:30:00Z"]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let after: serde_json::Value = serde_json::from_slice(&run(&["--json"]).stdout).expect("JSON");
    let vib = &after["assets"][0]["indicators"][0];
    assert!(vib["samples"].as_u64().is_some_and(|n| n <= 181), "{vib}");
    assert!(after["work_orders"].as_array().is_some_and(|o| o.iter().all(|o| o["source"] != "condition")), "{after}");
    let bad = record(&["--asset", "m1", "--action", "paint it"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Regrease the bearing, bearing_wear"));
}
