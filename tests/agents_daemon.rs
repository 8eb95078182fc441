//! The agents inside the real daemon: the last shift's history is backfilled into a
//! data directory (analytics replayed, as `linepilot demo` does), then `linepilot run`
//! is started on it. The daemon must write the shift's report by itself (the shift
//! has ended), list and serve it, explain a new anomaly within seconds, and write a
//! report on demand for `linepilot report` while it holds the data directory.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Daemon;
use linepilot::domain::{Event, EventKind};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const HOUR: i64 = 3_600_000_000_000;

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut resp =
        ureq::get(&format!("http://{addr}{path}")).config().http_status_as_error(false).build().call().expect("GET");
    (resp.status().as_u16(), resp.body_mut().read_to_string().expect("body"))
}

#[test]
fn daemon_writes_the_shift_report_and_explains_new_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // The demo config without sources' peers running and without a model: the daemon
    // must still write the report (template handover) and explain.
    let text = std::fs::read_to_string(root().join("configs/demo.toml")).expect("demo config");
    let mut out = String::new();
    let mut skip = false;
    for line in text.lines() {
        if line.starts_with('[') {
            skip = line == "[llm]";
        }
        if !skip {
            out.push_str(line);
            out.push('\n');
        }
    }
    let out = out.replace("data_dir = \"./data/demo\"", &format!("data_dir = {:?}", data.display().to_string()));
    // Explanations are published on the MQTT source's broker: a real mosquitto here.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").port()
    };
    let _broker = common::Mosquitto::start(dir.path(), port);
    let out = out.replace("url = \"mqtt://127.0.0.1:1883\"", &format!("url = \"mqtt://127.0.0.1:{port}\""))
        + "\n[agents]\npublish = { source = \"linesim-mqtt\", topic = \"lp-test\" }\n";
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(&cfg_path, &out).expect("config");
    let cfg = linepilot::config::Config::load(&cfg_path).expect("config loads");
    assert!(cfg.llm.is_none());
    let cal = linepilot::config::Calendar::new(&cfg).expect("calendar");

    // The shift that ended last, backfilled and analysed.
    let now = linepilot::domain::now_ns();
    let shift = cal
        .shifts_between(now - 48 * HOUR, now)
        .expect("calendar")
        .into_iter()
        .rev()
        .find(|w| w.end <= now)
        .expect("a shift that ended");
    let scenario_path = root().join("configs/scenarios/demo.toml");
    let mut sc = linesim::line::scenario::Scenario::load(&scenario_path).expect("scenario");
    sc.start = linepilot::api::query::format_time(shift.start);
    let hours = (shift.end - shift.start) as f64 / HOUR as f64;
    {
        let store = linepilot::service::open_store(&cfg, None, false).expect("store");
        linepilot::service::demo::backfill_scenario(&store, &sc, "demo.toml", hours, |_, _| {}).expect("backfill");
        linepilot::analytics::replay::replay(&store, &cfg, shift.start, shift.end, |_| {}).expect("replay");
        store.flush().expect("flush");
        store.close();
    }

    let daemon = Daemon::start(&cfg_path);
    // The report of the shift that ended, written by the daemon itself.
    let name = shift.label.replace('/', "_");
    let t = Instant::now();
    loop {
        let (status, body) = get(&daemon.addr, "/api/v1/reports");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        if v["reports"].as_array().is_some_and(|r| r.iter().any(|r| r["shift"] == shift.label.as_str())) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(240), "no report of {} after 240 s: {body}", shift.label);
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("the daemon wrote the report of {} {:.0} s after starting", shift.label, t.elapsed().as_secs_f64());
    let (status, html) = get(&daemon.addr, &format!("/api/v1/reports/{name}?format=html"));
    assert_eq!(status, 200);
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.matches("<svg").count() >= 4,
        "{}",
        &html[..200.min(html.len())]
    );
    let (status, md) = get(&daemon.addr, &format!("/api/v1/reports/{name}?format=md"));
    assert!(status == 200 && md.contains("## Downtime") && md.contains("fault_201"), "{md}");
    assert_eq!(get(&daemon.addr, "/api/v1/reports/..%2Fsecret?format=md").0, 400);
    assert_eq!(get(&daemon.addr, &format!("/api/v1/reports/{name}?format=exe")).0, 400);

    // `linepilot report` while the daemon holds the data directory: the daemon writes it.
    let out = Command::new(env!("CARGO_BIN_EXE_linepilot"))
        .args(["report", "--config"])
        .arg(&cfg_path)
        .args(["--shift", &shift.label])
        .output()
        .expect("linepilot report");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("written by the daemon"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Subscribe to the explanations before the anomaly comes.
    let mut opts = rumqttc::MqttOptions::new("agents-daemon-test", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = rumqttc::Client::new(opts, 10);
    client.subscribe("lp-test/+/explanation", rumqttc::QoS::AtLeastOnce).expect("subscribe");
    let (tx, rx) = std::sync::mpsc::channel::<(String, serde_json::Value)>();
    std::thread::spawn(move || {
        for n in conn.iter() {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = n {
                if let Ok(v) = serde_json::from_slice(&p.payload) {
                    let _ = tx.send((p.topic.clone(), v));
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    // A new anomaly is explained within seconds, through the API. (The daemon holds
    // the event log; the test adds the event as the analytics stage would, over the
    // same SQLite file.)
    let log = linepilot::store::events::EventLog::open(&data.join("events.sqlite")).expect("event log");
    let id = log
        .append(&Event {
            id: 0,
            ts: linepilot::domain::now_ns(),
            asset: Some("capper".into()),
            kind: EventKind::Anomaly,
            severity: 500,
            message:
                "capper.vib_de_rms is far from its usual level: 6.2 mm/s (baseline 2.1 mm/s, usual spread 0.2 mm/s)"
                    .into(),
            details: serde_json::json!({ "tag": "capper.vib_de_rms", "phase": "started", "value": 6.2, "unit": "mm/s",
                                         "baseline": 2.1, "scale": 0.2,
                                         "contributions": [{ "tag": "capper.vib_de_rms", "share": 1.0 }] }),
        })
        .expect("append");
    let t = Instant::now();
    let x = loop {
        let (status, body) = get(&daemon.addr, &format!("/api/v1/events/{id}/explanation"));
        if status == 200 {
            break serde_json::from_str::<serde_json::Value>(&body).expect("json");
        }
        assert_eq!(status, 404, "{body}");
        assert!(t.elapsed() < Duration::from_secs(30), "not explained after 30 s");
        std::thread::sleep(Duration::from_millis(500));
    };
    let text = x["text"].as_str().unwrap_or_default();
    assert!(text.contains("Main drive bearing wear") && text.contains("Checks:"), "{x}");
    assert_eq!(x["details"]["likely"][0]["failure_mode"], "bearing_wear");
    // ... and published on the broker.
    let (topic, msg) = loop {
        let (topic, msg) = rx.recv_timeout(Duration::from_secs(20)).expect("the explanation on MQTT within 20 s");
        if msg["event_id"] == id {
            break (topic, msg);
        }
    };
    assert_eq!(topic, "lp-test/capper/explanation");
    assert_eq!(msg["text"], x["text"]);
    drop(client);

    // The answer streamed as server-sent events: the grounded draft at once, then done.
    let (status, body) = get(&daemon.addr, "/api/v1/ask/stream?q=what%20was%20OEE%20last%20shift%3F&model=true");
    assert_eq!(status, 200);
    let draft = body.find("event: draft").expect("a draft event");
    let done = body.find("event: done").expect("a done event");
    assert!(draft < done && body.contains("oee_pct"), "{body}");
    assert!(!body.contains("event: answer"), "no model in this config: no model answer");
    assert!(daemon.stop().success());
}
