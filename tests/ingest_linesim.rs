//! All three protocols at once against the simulated line, with the demo
//! config (`configs/demo.toml`: 155 tags over OPC UA, Modbus TCP, MQTT JSON and
//! Sparkplug B), at real-time speed for `LINEPILOT_INTEROP_SECONDS` (default
//! 60; the 5-minute run is `LINEPILOT_INTEROP_SECONDS=300`).
//!
//! Every good sample in the store must be a value linesim served: for OPC UA
//! and MQTT at the same source timestamp; for Modbus (timestamped at the poll)
//! one of the values the register held within the poll alignment (the 1.5 s
//! before the poll). Every tag must have matched samples.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Gateway;
use linepilot::config::Config;
use linepilot::domain::SeriesKey;
use linepilot::store::points::Column;
use linesim::line::live::LiveOptions;
use linesim::line::scenario::Scenario;
use linesim::line::{Binding, PlcType, Val};
use linesim::server::Running;
use parking_lot::Mutex;

const S: i64 = 1_000_000_000;

/// Per tag: every (stamp, value) linesim published, in stamp order.
type Served = Vec<Vec<(i64, Val)>>;

fn as_f64(v: Val) -> f64 {
    match v {
        Val::Bool(b) => b as u8 as f64,
        Val::I64(x) => x as f64,
        Val::F64(x) => x,
    }
}

/// Equal as the wire carries it: f32 registers and variables hold the nearest f32,
/// scaled Modbus integers hold the value to half a step.
fn same(t: &linesim::line::Tag, served: Val, stored: f64) -> bool {
    let s = as_f64(served);
    match &t.binding {
        Binding::Modbus(r) if r.ty == PlcType::F32 => (s as f32) == (stored as f32),
        Binding::Modbus(r) if r.scale != 1.0 => (s - stored).abs() <= r.scale / 2.0 + 1e-9,
        _ if t.ty == PlcType::F32 => (s as f32) == (stored as f32),
        _ => s == stored,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_protocols_store_what_the_line_served() {
    let seconds: u64 = std::env::var("LINEPILOT_INTEROP_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario_path = root.join("configs/scenarios/demo.toml");
    let mut sc = Scenario::load(&scenario_path).expect("demo scenario");
    sc.opcua.listen = "127.0.0.1:0".into();
    sc.modbus.listen = "127.0.0.1:0".into();
    sc.mqtt.listen = "127.0.0.1:0".into();
    sc.opcua.pki_dir = dir.path().join("linesim-pki").display().to_string();
    let opts = LiveOptions { speed: 1.0, skip_ns: 0, start_ns: None, truth: None };
    let line = Running::start(&sc, &scenario_path.display().to_string(), opts).await.expect("linesim starts");
    let catalog = line.line.feed.catalog.clone();

    // Record everything the line publishes.
    let served: Arc<Mutex<Served>> = Arc::new(Mutex::new(vec![Vec::new(); catalog.len()]));
    let recorder = {
        let served = served.clone();
        let mut frames = line.line.feed.frames.clone();
        tokio::spawn(async move {
            loop {
                {
                    let f = frames.borrow_and_update().clone();
                    let mut s = served.lock();
                    for (i, per_tag) in s.iter_mut().enumerate() {
                        if per_tag.last().is_none_or(|(ts, _)| *ts < f.stamps[i]) {
                            per_tag.push((f.stamps[i], f.values[i]));
                        }
                    }
                }
                if frames.changed().await.is_err() {
                    return;
                }
            }
        })
    };

    // The gateway with the demo config, pointed at the line's ports.
    let text = std::fs::read_to_string(root.join("configs/demo.toml")).expect("configs/demo.toml");
    let mut config = Config::from_str_named(&text, "demo.toml").expect("demo config loads");
    config.store.data_dir = dir.path().join("data");
    linepilot::service::demo::point_sources_at(&mut config, &line);
    let gw = Gateway::start_with(&config, true);
    let (store, health) = (gw.store.clone(), gw.health.clone());

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let states: Vec<String> =
        health.snapshot().iter().map(|h| format!("{} {:?} {:?}", h.id, h.state, h.last_error)).collect();
    assert!(health.all_connected(), "every source connected at the end: {states:?}");
    gw.stop().await;
    recorder.abort();
    let served = served.lock().clone();

    let mut matched = 0usize;
    let mut unmatched_tags = Vec::new();
    let mut mismatches = Vec::new();
    let mut per_protocol: HashMap<&str, usize> = HashMap::new();
    for (i, t) in catalog.tags.iter().enumerate() {
        let Some((id, _)) = store.catalog().lookup(&SeriesKey::new(t.name.clone())) else {
            unmatched_tags.push(t.name.clone());
            continue;
        };
        let p = store.range(id, i64::MIN, i64::MAX).expect("range");
        let values: Vec<f64> = match &p.values {
            Column::F64(v) => v.clone(),
            Column::I64(v) => v.iter().map(|x| *x as f64).collect(),
            Column::Bool(v) => v.iter().map(|b| *b as u8 as f64).collect(),
            Column::Str(_) => Vec::new(),
        };
        let mut tag_matched = 0;
        for k in 0..p.ts.len() {
            if p.quality.get(k).copied().unwrap_or(0) != 0 || k >= values.len() {
                continue;
            }
            let (ts, v) = (p.ts[k], values[k]);
            let ok = match &t.binding {
                // Polled: a value the register held around the poll — the latest
                // sample before it, or one taken within the poll alignment (1.5 s).
                Binding::Modbus(_) => {
                    let upto = served[i].partition_point(|(st, _)| *st <= ts + S / 5);
                    if upto == 0 {
                        continue; // polled before the recorder saw the line
                    }
                    let from = served[i][..upto].partition_point(|(st, _)| *st < ts - 3 * S / 2).min(upto - 1);
                    served[i][from.saturating_sub(1)..upto].iter().any(|(_, sv)| same(t, *sv, v))
                }
                // Source-timestamped: the value served at exactly that stamp.
                _ => match served[i].binary_search_by_key(&ts, |(st, _)| *st) {
                    Ok(pos) => same(t, served[i][pos].1, v),
                    Err(_) => continue, // before the recorder's first frame
                },
            };
            if ok {
                tag_matched += 1;
            } else {
                mismatches.push(format!("{} @ {ts}: stored {v}", t.name));
            }
        }
        if tag_matched == 0 {
            unmatched_tags.push(t.name.clone());
        }
        matched += tag_matched;
        let proto = match t.binding {
            Binding::OpcUa { .. } => "opcua",
            Binding::Modbus(_) => "modbus",
            Binding::MqttJson { .. } => "mqtt-json",
            Binding::Sparkplug { .. } => "sparkplug",
        };
        *per_protocol.entry(proto).or_default() += tag_matched;
    }
    eprintln!("{seconds} s: {matched} stored samples matched what linesim served: {per_protocol:?}");
    assert!(
        mismatches.is_empty(),
        "{} stored values linesim never served, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    assert!(unmatched_tags.is_empty(), "tags without a matched sample: {unmatched_tags:?}");
    line.line.stop();
}
