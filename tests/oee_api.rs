//! `GET /api/v1/oee`, `GET /api/v1/downtime` and `linepilot oee` / `linepilot downtime`
//! through the real binary, on a hand-made hour whose figures are known exactly: a
//! shift 06:00-07:00 in Asia/Shanghai with a 10-minute break, a 5-minute fault, a
//! 2-minute starvation and a counter reset. The state tags report by exception (one
//! sample per change), so the tracker must hold the last state across gaps and find
//! the state from before the shift.

mod common;

use std::process::Command;

use common::Daemon;

/// 2026-11-28 06:00 in Shanghai (UTC+8) = 2026-11-27T22:00:00Z.
const T0: i64 = 1_795_816_800;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let text = format!(
        r#"[site]
name = "Test plant"
time_zone = "Asia/Shanghai"
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
key_asset = "m1"
[[asset]]
id = "m1"
name = "Filler"
line = "l1"
kind = "filler"
ideal_rate_per_min = 60
state = {{ tag = "m1.state", codes = {{ 0 = "idle", 1 = "running", 2 = "starved", 4 = "fault" }}, fault_code_tag = "m1.fault" }}
counters = {{ good = "m1.good", reject = "m1.reject" }}
[[tag]]
name = "m1.state"
asset = "m1"
description = "state"
value_type = "i64"
[[tag]]
name = "m1.fault"
asset = "m1"
description = "fault code"
value_type = "i64"
[[tag]]
name = "m1.good"
asset = "m1"
description = "good count"
value_type = "i64"
[[tag]]
name = "m1.reject"
asset = "m1"
description = "reject count"
value_type = "i64"
[[shift]]
name = "A"
start = "06:00"
end = "07:00"
breaks = [{{ start = "06:30", minutes = 10 }}]
"#,
        dir.join("data").display()
    );
    let path = dir.join("plant.toml");
    std::fs::write(&path, text).expect("writing config");
    path
}

fn body() -> String {
    let mut lp = String::new();
    let mut put = |field: &str, v: i64, t: i64| lp.push_str(&format!("m1 {field}={v}i {}\n", (T0 + t) * 1_000_000_000));
    for (t, state, fault) in
        [(-60, 1, 0), (600, 4, 101), (900, 1, 0), (1800, 0, 0), (2400, 1, 0), (3000, 2, 0), (3120, 1, 0)]
    {
        put("state", state, t);
        put("fault", fault, t);
    }
    // The counters reset between 06:50 and 06:55.
    for (t, good, reject) in [
        (0, 1000, 10),
        (600, 1500, 20),
        (1800, 2300, 30),
        (2400, 2300, 30),
        (3000, 2800, 35),
        (3300, 200, 5),
        (3600, 400, 8),
    ] {
        put("good", good, t);
        put("reject", reject, t);
    }
    lp
}

fn get(d: &Daemon, path: &str, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let mut req = ureq::get(&format!("http://{}{path}", d.addr));
    for (k, v) in params {
        req = req.query(*k, *v);
    }
    let mut resp = req.config().http_status_as_error(false).build().call().expect("request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).expect("JSON"))
}

fn cli(cfg: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_linepilot")).args(args).arg("--config").arg(cfg).output().expect("run");
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn close(a: &serde_json::Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn oee_and_downtime_over_api_and_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let daemon = Daemon::start(&cfg);
    assert_eq!(daemon.write(&body()), Ok(204));

    let (status, r) = get(&daemon, "/api/v1/oee", &[("shift", "2026-11-28/A")]);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["window"]["from"], T0 * 1_000_000_000);
    assert_eq!(r["window"]["from_local"], "2026-11-28T06:00:00");
    assert!(close(&r["window"]["planned_s"], 3000.0), "{}", r["window"]);
    let m1 = &r["assets"][0];
    // Running 0-600, 900-1800, 2400-3000, 3120-3600 s; the break (1800-2400) is planned.
    assert!(close(&m1["run_s"], 2580.0), "{m1}");
    assert!(close(&m1["availability"], 2580.0 / 3000.0), "{m1}");
    // 2200 good + 33 rejects at an ideal 1 per second in 2580 s, across a counter reset.
    assert_eq!((m1["good"].as_u64(), m1["reject"].as_u64(), m1["total"].as_u64()), (Some(2200), Some(33), Some(2233)));
    assert!(close(&m1["performance"], 2233.0 / 2580.0), "{m1}");
    assert!(close(&m1["quality"], 2200.0 / 2233.0), "{m1}");
    assert!(close(&m1["oee"], 2580.0 / 3000.0 * 2233.0 / 2580.0 * 2200.0 / 2233.0), "{m1}");
    assert_eq!(m1["downtime"][0], serde_json::json!({ "cause": "fault_101", "seconds": 300.0, "stops": 1 }));
    assert_eq!(m1["downtime"][1], serde_json::json!({ "cause": "starved", "seconds": 120.0, "stops": 1 }));
    assert_eq!(m1["failures"], 1);
    assert!(close(&m1["mtbf_s"], 2580.0) && close(&m1["mttr_s"], 300.0), "{m1}");
    assert_eq!(r["lines"][0]["key_asset"], "m1");
    assert_eq!(r["lines"][0]["oee"], *m1);

    // The first half hour, in local time: the fault only.
    let (status, dt) =
        get(&daemon, "/api/v1/downtime", &[("from", "2026-11-28T06:00"), ("to", "2026-11-28T06:30"), ("asset", "m1")]);
    assert_eq!(status, 200, "{dt}");
    let a = &dt["assets"][0];
    assert!(close(&a["planned_s"], 1800.0) && close(&a["downtime_s"], 300.0), "{a}");
    assert_eq!(a["stops"][0]["from"], (T0 + 600) * 1_000_000_000);

    // A window still running is cut where knowledge ends (here the clock: the data is
    // older), not stretched to its end: the last state does not run into the future.
    let before = linepilot::domain::now_ns();
    let (status, open) = get(&daemon, "/api/v1/oee", &[("from", "2026-11-28T06:00"), ("to", "2099-01-01T00:00")]);
    assert_eq!(status, 200, "{open}");
    let to = open["window"]["to"].as_i64().unwrap_or(0);
    assert!(to >= before && to <= linepilot::domain::now_ns(), "window {}", open["window"]);

    let (status, e) = get(&daemon, "/api/v1/oee", &[("shift", "2026-11-28/X")]);
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap_or("").contains("no shift named `X`"), "{e}");
    let (status, _) = get(
        &daemon,
        "/api/v1/downtime",
        &[("from", "2026-11-28T06:00"), ("to", "2026-11-28T07:00"), ("asset", "nope")],
    );
    assert_eq!(status, 404);

    // The CLI asks the daemon while it holds the data directory, and reads the store after.
    let running = cli(&cfg, &["oee", "--shift", "2026-11-28/A", "--json"]);
    let via_api: serde_json::Value = serde_json::from_str(&running).expect("CLI JSON");
    assert_eq!(via_api, r);
    assert!(daemon.stop().success());
    let stopped: serde_json::Value =
        serde_json::from_str(&cli(&cfg, &["oee", "--shift", "2026-11-28/A", "--json"])).expect("CLI JSON");
    assert_eq!(stopped, r);
    let table = cli(&cfg, &["oee", "--shift", "2026-11-28/A"]);
    assert!(
        table.contains("shift 2026-11-28/A: 2026-11-28T06:00:00 .. 2026-11-28T07:00:00 (Asia/Shanghai)"),
        "{table}"
    );
    assert!(table.contains("l1 (m1)") && table.contains("86.0%") && table.contains("fault_101 5m 0s (1)"), "{table}");
    let table = cli(&cfg, &["downtime", "--from", "2026-11-28T06:00", "--to", "2026-11-27T23:00:00Z"]);
    assert!(table.contains("m1: downtime 7m 0s of 50m 0s planned, 1 failures"), "{table}");
    assert!(table.contains("2026-11-28T06:10:00") && table.contains("starved"), "{table}");
}
