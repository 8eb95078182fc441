//! The Modbus driver against linesim's Modbus TCP server, in-process on
//! loopback: every tag of the register map lands in the store with the value
//! the frozen line serves; a server that goes away shows as `down` with
//! bad-quality samples, and polling resumes by itself when it comes back.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use linepilot::config::Config;
use linepilot::domain::{SeriesId, SeriesKey, Value};
use linepilot::ingest::{Health, Sink, SourceState};
use linepilot::store::Store;
use linesim::line::live::LiveOptions;
use linesim::line::scenario::Scenario;
use linesim::line::{Binding, PlcType, Val};
use linesim::server::Running;
use tokio::sync::watch;

const SOURCE: &str = "linesim-modbus";

/// Starts the demo line frozen two hours into its run, Modbus on `modbus_port` (0: any).
async fn start_line(pki: &Path, modbus_port: u16) -> Running {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/scenarios/demo.toml");
    let mut scenario = Scenario::load(Path::new(path)).expect("demo scenario");
    scenario.opcua.listen = "127.0.0.1:0".into();
    scenario.opcua.pki_dir = pki.display().to_string();
    scenario.mqtt.listen = "127.0.0.1:0".into();
    scenario.modbus.listen = format!("127.0.0.1:{modbus_port}");
    let start_ns = scenario.start_ns(path).expect("start");
    let opts = LiveOptions { speed: 0.0, skip_ns: 2 * 3_600_000_000_000, start_ns: Some(start_ns), truth: None };
    // The port of a stopped server may take a moment to be free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Running::start(&scenario, path, opts.clone()).await {
            Ok(r) => return r,
            Err(e) if Instant::now() < deadline => {
                eprintln!("linesim start failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("linesim does not start: {e}"),
        }
    }
}

/// The gateway config: the line's assets, one Modbus source and the whole register map.
fn gateway_config(running: &Running, data_dir: &Path) -> Config {
    let catalog = &running.line.feed.catalog;
    let mut assets: Vec<&str> = Vec::new();
    for t in &catalog.tags {
        if matches!(t.binding, Binding::Modbus(_)) && !assets.contains(&t.asset) {
            assets.push(t.asset);
        }
    }
    let mut text = format!(
        "[site]\nname = \"Plant\"\ntime_zone = \"UTC\"\n[store]\ndata_dir = \"{}\"\n[[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n",
        data_dir.display()
    );
    for a in &assets {
        text.push_str(&format!("[[asset]]\nid = \"{a}\"\nname = \"{a}\"\nline = \"line1\"\nkind = \"{a}\"\n"));
    }
    text.push_str(&format!(
        "[[source]]\nid = \"{SOURCE}\"\nkind = \"modbus\"\nendpoint = \"tcp://{}\"\npoll_interval = \"200ms\"\ntimeout = \"300ms\"\n",
        running.modbus.addr
    ));
    let map = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/linesim/modbus-map.toml"))
        .expect("configs/linesim/modbus-map.toml");
    text.push_str(&map);
    Config::from_str_named(&text, "gateway.toml").unwrap_or_else(|e| panic!("gateway config does not load:\n{e}"))
}

/// The ingest core in-process: store, channel, writer, supervised sources.
struct Gateway {
    store: Arc<Store>,
    health: Arc<Health>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ids: Vec<(String, SeriesId)>,
}

impl Gateway {
    fn start(config: &Config) -> Gateway {
        let store = Arc::new(linepilot::service::open_store(config, None, false).expect("store"));
        let health = Arc::new(Health::default());
        let (sink, rx) = Sink::channel(64);
        tokio::spawn(linepilot::ingest::writer(store.clone(), rx, 10_000));
        let (stop, stop_rx) = watch::channel(false);
        let tasks =
            linepilot::ingest::supervise(config, store.clone(), sink, health.clone(), stop_rx).expect("sources");
        let keys: Vec<_> = config.tags.iter().map(|t| (SeriesKey::new(t.name.clone()), t.value_type)).collect();
        let ids = store.resolve(&keys).expect("series");
        let ids = config.tags.iter().map(|t| t.name.clone()).zip(ids).collect();
        Gateway { store, health, stop, tasks, ids }
    }

    fn state(&self) -> SourceState {
        self.health.snapshot().into_iter().find(|s| s.id == SOURCE).expect("source health").state
    }

    /// Waits until `ok` holds for every tag's latest sample (name, value, quality good, ts).
    async fn wait_latest(&self, what: &str, ok: impl Fn(&linepilot::store::Latest) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ids: Vec<SeriesId> = self.ids.iter().map(|(_, id)| *id).collect();
            let latest = self.store.latest(&ids);
            let missing: Vec<&str> = self
                .ids
                .iter()
                .zip(&latest)
                .filter(|(_, l)| !l.as_ref().is_some_and(&ok))
                .map(|((n, _), _)| n.as_str())
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} tags never got there, e.g. {:?}; health {:?}",
                missing.len(),
                &missing[..missing.len().min(5)],
                self.health.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_state(&self, want: SourceState) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.state() != want {
            assert!(Instant::now() < deadline, "source never got {want:?}: {:?}", self.health.snapshot());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

/// Checks every Modbus tag's latest value against the frozen frame.
fn check_values(running: &Running, gw: &Gateway) {
    let catalog = &running.line.feed.catalog;
    let frame = running.line.feed.frames.borrow().clone();
    let ids: Vec<SeriesId> = gw.ids.iter().map(|(_, id)| *id).collect();
    let latest = gw.store.latest(&ids);
    let mut checked = 0;
    for ((name, _), l) in gw.ids.iter().zip(latest) {
        let l = l.unwrap_or_else(|| panic!("{name}: no sample"));
        assert!(l.quality.is_good(), "{name}: quality {}", l.quality);
        let i = catalog.find(name).unwrap_or_else(|| panic!("{name}: not a linesim tag"));
        let Binding::Modbus(reg) = &catalog.tags[i].binding else { panic!("{name}: not a Modbus tag") };
        let served = frame.values[i];
        match (served, &l.value) {
            (Val::Bool(b), Value::Bool(g)) => assert_eq!(*g, b, "{name}"),
            (Val::I64(x), Value::I64(g)) => assert_eq!(*g, x, "{name}"),
            (v, g) => {
                let want = v.as_f64();
                let got = match g {
                    Value::F64(x) => *x,
                    Value::I64(x) => *x as f64,
                    other => panic!("{name}: got {other:?} for {v:?}"),
                };
                let tol = match reg.ty {
                    PlcType::F32 => want.abs() * f64::from(f32::EPSILON) + 1e-9,
                    PlcType::F64 => 1e-9 * want.abs().max(1.0),
                    _ => reg.scale / 2.0 + 1e-9 * want.abs().max(1.0),
                };
                assert!(
                    (got - want).abs() <= tol,
                    "{name}: gateway {got}, linesim {want} ({:?}, scale {})",
                    reg.ty,
                    reg.scale
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 60, "the register map has 60 tags");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_modbus_tag_reads_what_linesim_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start_line(&dir.path().join("pki"), 0).await;
    let config = gateway_config(&running, &dir.path().join("data"));
    assert_eq!(config.tags.len(), 60);
    let gw = Gateway::start(&config);
    gw.wait_latest("first good poll", |l| l.quality.is_good()).await;
    assert_eq!(gw.state(), SourceState::Connected);
    check_values(&running, &gw);
    let snap = gw.health.snapshot();
    assert_eq!(snap[0].bad_samples, 0, "{snap:?}");
    assert_eq!(snap[0].errors, 0, "{snap:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_shows_down_and_polling_resumes_when_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start_line(&dir.path().join("pki"), 0).await;
    let port = running.modbus.addr.port();
    let config = gateway_config(&running, &dir.path().join("data"));
    let gw = Gateway::start(&config);
    gw.wait_latest("first good poll", |l| l.quality.is_good()).await;

    // The server goes away: the source is down and every tag gets a bad sample.
    let lost_at = linepilot::domain::now_ns();
    drop(running);
    gw.wait_state(SourceState::Down).await;
    gw.wait_latest("bad samples after the loss", |l| !l.quality.is_good() && l.ts >= lost_at).await;
    let snap = gw.health.snapshot();
    assert!(snap[0].last_error.is_some(), "{snap:?}");
    assert!(snap[0].reconnects >= 1, "{snap:?}");

    // It comes back on the same port: polling resumes without help.
    let back = start_line(&dir.path().join("pki"), port).await;
    let back_at = linepilot::domain::now_ns();
    gw.wait_state(SourceState::Connected).await;
    gw.wait_latest("good samples after the return", |l| l.quality.is_good() && l.ts >= back_at).await;
    check_values(&back, &gw);

    // The outage is in the event log: lost, then restored.
    let events = gw
        .store
        .events()
        .query(&linepilot::store::events::EventQuery { from: Some(lost_at), ..Default::default() })
        .expect("events");
    let msgs: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    let lost = msgs.iter().position(|m| m.contains("connection lost"));
    let restored = msgs.iter().position(|m| m.contains("connection restored"));
    assert!(matches!((lost, restored), (Some(a), Some(b)) if a < b), "events: {msgs:?}");
    gw.stop().await;
}
