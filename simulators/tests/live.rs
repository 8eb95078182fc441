//! The `linesim` binary end to end: the real model behind its three servers,
//! read by real clients.
//!
//! - Frozen line (`--speed 0 --skip 2h --scenario-start`): pymodbus reads the
//!   whole register map and must decode exactly what `linesim snapshot --at 2h`
//!   says every tag is, so the servers serve the model's values.
//! - Running line (`--speed 20 --scenario-start --skip 20m`): counters move over Modbus, the MQTT JSON and
//!   Sparkplug topics arrive, and SIGTERM ends the run with a `run_end` record.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_modbus::client::{tcp, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn demo() -> String {
    root().join("configs/scenarios/demo.toml").display().to_string()
}

/// A running `linesim live`, killed on drop.
struct Live {
    child: Child,
    endpoints: serde_json::Value,
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn live(args: &[&str], dir: &std::path::Path) -> Live {
    let truth = dir.join("truth.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_linesim"))
        .args(["live", "--scenario", &demo(), "--any-port", "--truth"])
        .arg(&truth)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("linesim starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("linesim prints its endpoints");
    let endpoints: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("endpoints line `{line}` is not JSON: {e}"));
    Live { child, endpoints }
}

fn python_has(module: &str) {
    let ok = Command::new("python3").args(["-c", &format!("import {module}")]).output();
    match ok {
        Ok(o) if o.status.success() => {}
        _ => panic!("python3 with `{module}` is needed: python3 -m pip install -r tests/interop/requirements.txt"),
    }
}

#[test]
fn frozen_line_serves_the_models_values_over_modbus() {
    python_has("pymodbus");
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = Command::new(env!("CARGO_BIN_EXE_linesim"))
        .args(["snapshot", "--scenario", &demo(), "--at", "2h"])
        .output()
        .expect("snapshot runs");
    assert!(snap.status.success(), "{}", String::from_utf8_lossy(&snap.stderr));
    let snap: serde_json::Value = serde_json::from_slice(&snap.stdout).expect("snapshot is JSON");
    let expected = dir.path().join("expected.json");
    std::fs::write(&expected, snap["values"].to_string()).expect("write expected");

    let l = live(&["--speed", "0", "--skip", "2h", "--scenario-start"], dir.path());
    let modbus = l.endpoints["modbus"].as_str().expect("modbus address").to_string();
    let (host, port) = modbus.rsplit_once(':').expect("host:port");
    let out = Command::new("python3")
        .arg(root().join("tests/interop/modbus_client.py"))
        .args(["--host", host, "--port", port, "--map"])
        .arg(root().join("configs/linesim/modbus-map.toml"))
        .arg("--expected")
        .arg(&expected)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pymodbus against the frozen line:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_line_moves_and_publishes_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // From the scenario's start plus 20 min, where the washer is known to run
    // (`linesim snapshot --at 20m..23m`): from "now" the window could fall in a
    // stop and the count would rightly not move.
    let mut l = live(&["--speed", "20", "--scenario-start", "--skip", "20m"], dir.path());
    assert_eq!(l.endpoints["tags"], 155);
    assert!(l.endpoints["opcua"].as_str().is_some_and(|u| u.starts_with("opc.tcp://127.0.0.1:")));

    // Modbus: the washer's good count (unit 1, input 2-3, u32 ABCD) rises while it runs.
    let addr = l.endpoints["modbus"].as_str().and_then(|a| a.parse().ok()).expect("modbus address");
    let mut ctx = tcp::connect(addr).await.expect("modbus connects");
    ctx.set_slave(Slave(1));
    let count = |r: Vec<u16>| (u32::from(r[0]) << 16) | u32::from(r[1]);
    let first = count(ctx.read_input_registers(2, 2).await.expect("io").expect("no exception"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = count(ctx.read_input_registers(2, 2).await.expect("io").expect("no exception"));
    assert!(second > first + 100, "washer.good_count {first} -> {second} in 30 simulated seconds");

    // MQTT: a vibration JSON message and a Sparkplug DDATA arrive.
    let mq: std::net::SocketAddr = l.endpoints["mqtt"].as_str().and_then(|a| a.parse().ok()).expect("mqtt address");
    let mut opts = rumqttc::MqttOptions::new("live-test", mq.ip().to_string(), mq.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
    client.subscribe("plant/line1/#", rumqttc::QoS::AtMostOnce).await.expect("subscribe");
    client.subscribe("spBv1.0/line1/DDATA/#", rumqttc::QoS::AtMostOnce).await.expect("subscribe");
    let (mut json_seen, mut ddata_seen) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(json_seen && ddata_seen) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), events.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                if p.topic.starts_with("plant/line1/") {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).expect("JSON payload");
                    assert!(v["rms"].as_f64().is_some_and(|x| x > 0.0), "{}: {v}", p.topic);
                    json_seen = true;
                } else {
                    ddata_seen = !p.payload.is_empty();
                }
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => panic!("mqtt: {e}"),
        }
    }
    assert!(json_seen && ddata_seen, "json {json_seen}, sparkplug DDATA {ddata_seen}");

    // SIGTERM: the run ends with its summary and run_end in the ground truth.
    let pid = l.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while l.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = l.child.try_wait().ok().flatten().expect("linesim exits on SIGTERM");
    assert!(status.success(), "{status}");
    let truth = std::fs::read_to_string(dir.path().join("truth.jsonl")).expect("truth file");
    let last: serde_json::Value = serde_json::from_str(truth.lines().last().expect("records")).expect("JSON");
    assert_eq!(last["kind"], "run_end");
    assert!(truth.lines().any(|l| l.contains("\"kind\":\"shift_summary\"")) || !truth.contains("shift_start"));
}
