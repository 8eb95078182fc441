//! The MQTT source against linesim's MQTT side (embedded rumqttd broker, the
//! JSON vibration sensors and the Sparkplug B energy meters), in-process:
//!
//! - the samples in the store carry the payloads' timestamps and values, checked
//!   against what a reference subscriber of our own saw on the broker (its
//!   Sparkplug payloads decoded with the simulator's own protobuf types);
//! - a malformed JSON message is counted in health, marks its tag
//!   `BAD_DECODING`, and the source carries on;
//! - when the broker goes away and comes back on the same port the source
//!   reconnects, subscribes again and samples resume (Sparkplug included, via
//!   a rebirth request). rumqttd cannot be shut down in-process, so the
//!   gateway reaches the broker through a TCP proxy that the test stops and
//!   starts again on the same port: for the gateway the broker is gone.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::Gateway;
use linepilot::config::Config;
use linepilot::domain::{Quality, SeriesKey};
use linepilot::ingest::SourceState;
use linepilot::store::points::Column;
use linepilot::store::Store;
use linesim::line::live::LiveOptions;
use linesim::line::scenario::Scenario;
use linesim::line::{Binding, Catalog};
use linesim::server::sparkplug as simsp;
use parking_lot::Mutex;
use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// (tag name) → (ts ns → value) as the reference subscriber saw them.
type Reference = Arc<Mutex<HashMap<String, HashMap<i64, f64>>>>;

const MALFORMED_TOPIC: &str = "test/gateway/malformed";
const MALFORMED_TAG: &str = "test.malformed";
const DEADBAND_TOPIC: &str = "test/gateway/deadband";
const DEADBAND_TAG: &str = "test.deadband";
const LABELLED_TAG: &str = "line.vib_de_rms";

/// A TCP proxy from a fixed local port to the broker; `stop` closes the
/// listener and every connection through it.
struct Proxy {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(listen: SocketAddr, broker: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(listen).await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let t = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(broker).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                t.lock().push(conn);
            }
        });
        Proxy { addr, tasks, accept }
    }

    fn stop(self) {
        self.accept.abort();
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

/// Subscribes to the line's MQTT traffic and records every tag value published.
async fn reference_subscriber(broker: SocketAddr, catalog: &Catalog, seen: Reference) -> AsyncClient {
    // topic → [(field, tag name)] and (device, alias) → tag name.
    let mut json: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut aliases: HashMap<(String, u64), String> = HashMap::new();
    let mut names: HashMap<(String, String), String> = HashMap::new();
    for t in &catalog.tags {
        match &t.binding {
            Binding::MqttJson { topic, field } => {
                json.entry(topic.clone()).or_default().push((field.to_string(), t.name.clone()))
            }
            Binding::Sparkplug { device, metric, alias } => {
                aliases.insert((device.to_string(), *alias), t.name.clone());
                names.insert((device.to_string(), metric.to_string()), t.name.clone());
            }
            _ => {}
        }
    }
    let mut opts = MqttOptions::new("test-reference", broker.ip().to_string(), broker.port());
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    let sub = client.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    sub.try_subscribe("plant/line1/#", QoS::AtMostOnce).expect("subscribe");
                    sub.try_subscribe("spBv1.0/line1/#", QoS::AtMostOnce).expect("subscribe");
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let mut seen = seen.lock();
                    if let Some(fields) = json.get(&p.topic) {
                        let v: serde_json::Value = match serde_json::from_slice(&p.payload) {
                            Ok(v) => v,
                            Err(_) => continue,
                        };
                        let ts = v["ts_ms"].as_i64().expect("ts_ms") * 1_000_000;
                        for (field, name) in fields {
                            if let Some(x) = v[field].as_f64() {
                                seen.entry(name.clone()).or_default().insert(ts, x);
                            }
                        }
                    } else if p.topic.contains("/DDATA/") || p.topic.contains("/DBIRTH/") {
                        let device = p.topic.rsplit('/').next().unwrap_or_default().to_string();
                        let payload = simsp::Payload::decode(p.payload.as_ref()).expect("sparkplug payload");
                        for m in payload.metrics {
                            let name = match (&m.name, m.alias) {
                                (Some(n), _) => names.get(&(device.clone(), n.clone())),
                                (None, Some(a)) => aliases.get(&(device.clone(), a)),
                                _ => None,
                            };
                            let (Some(name), Some(simsp::metric::Value::DoubleValue(x)), Some(ts)) =
                                (name, m.value, m.timestamp)
                            else {
                                continue;
                            };
                            seen.entry(name.clone()).or_default().insert(ts as i64 * 1_000_000, x);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("reference subscriber subscribed in time")
        .expect("reference subscriber");
    client
}

/// The gateway config: the `vib_de` RMS of every machine (JSON), its power and
/// energy (Sparkplug), and one tag on a topic the test itself publishes to.
fn gateway_config(
    catalog: &Catalog,
    url: &str,
    source_extra: &str,
    data_dir: &std::path::Path,
) -> (Config, Vec<String>, Vec<String>) {
    let mut assets: Vec<&str> = Vec::new();
    let mut tags = String::new();
    let (mut vib, mut energy) = (Vec::new(), Vec::new());
    for t in &catalog.tags {
        let address = match &t.binding {
            Binding::MqttJson { topic, field } if topic.ends_with("/vib_de") && *field == "rms" => {
                vib.push(t.name.clone());
                format!("{{ topic = \"{topic}\", json_path = \"$.rms\", ts_path = \"$.ts\" }}")
            }
            Binding::Sparkplug { device, metric, .. } => {
                energy.push(t.name.clone());
                format!("{{ topic = \"spBv1.0/line1/+/energy/{device}\", metric = \"{metric}\" }}")
            }
            _ => continue,
        };
        if !assets.contains(&t.asset) {
            assets.push(t.asset);
        }
        tags.push_str(&format!(
            "[[tag]]\nname = \"{}\"\nasset = \"{}\"\nsource = \"line-mqtt\"\ndescription = \"{}\"\naddress = {address}\n",
            t.name, t.asset, t.name
        ));
    }
    let mut text = format!(
        "[site]\nname = \"Plant\"\n[store]\ndata_dir = \"{}\"\n[[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n",
        data_dir.display()
    );
    assets.push("test");
    for a in &assets {
        text.push_str(&format!("[[asset]]\nid = \"{a}\"\nname = \"{a}\"\nline = \"line1\"\nkind = \"{a}\"\n"));
    }
    text.push_str(&format!(
        "[[source]]\nid = \"line-mqtt\"\nkind = \"mqtt\"\nurl = \"{url}\"\nclient_id = \"gateway-test\"\nkeep_alive = \"5s\"\n{source_extra}\n"
    ));
    text.push_str(&tags);
    text.push_str(&format!(
        "[[tag]]\nname = \"{MALFORMED_TAG}\"\nasset = \"test\"\nsource = \"line-mqtt\"\ndescription = \"test\"\naddress = {{ topic = \"{MALFORMED_TOPIC}\", json_path = \"$.v\" }}\n"
    ));
    // One tag for every machine's vib_de: the machine is a label taken from the topic.
    text.push_str(&format!(
        "[[tag]]\nname = \"{LABELLED_TAG}\"\nasset = \"test\"\nsource = \"line-mqtt\"\ndescription = \"vib_de of each machine\"\naddress = {{ topic = \"plant/line1/+/vib_de\", json_path = \"$.rms\", ts_path = \"$.ts\", labels = {{ machine = \"{{3}}\" }} }}\n"
    ));
    text.push_str(&format!(
        "[[tag]]\nname = \"{DEADBAND_TAG}\"\nasset = \"test\"\nsource = \"line-mqtt\"\ndescription = \"test\"\naddress = {{ topic = \"{DEADBAND_TOPIC}\" }}\ndeadband = 0.1\n"
    ));
    let config = Config::from_str_named(&text, "gateway.toml").unwrap_or_else(|e| panic!("config:\n{e}\n{text}"));
    (config, vib, energy)
}

/// (ts, value, quality) of every sample of `name`.
fn stored(store: &Store, name: &str) -> Vec<(i64, f64, u32)> {
    let id = store.series().into_iter().find(|s| s.key.name == name).unwrap_or_else(|| panic!("series {name}")).id;
    let p = store.range(id, i64::MIN, i64::MAX).expect("range");
    let values: Vec<f64> = match p.values {
        Column::F64(v) => v,
        Column::I64(v) => v.into_iter().map(|x| x as f64).collect(),
        other => panic!("{name}: unexpected column {other:?}"),
    };
    (0..p.ts.len()).map(|i| (p.ts[i], values[i], p.quality.get(i).copied().unwrap_or(0))).collect()
}

/// (ts, value, quality) of every sample of the series `key` (empty if it does not exist).
fn stored_key(store: &Store, key: &SeriesKey) -> Vec<(i64, f64, u32)> {
    let Some((id, _)) = store.catalog().lookup(key) else { return Vec::new() };
    let p = store.range(id, i64::MIN, i64::MAX).expect("range");
    let Column::F64(values) = p.values else { panic!("{key}: not f64") };
    (0..p.ts.len()).map(|i| (p.ts[i], values[i], p.quality.get(i).copied().unwrap_or(0))).collect()
}

async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every good sample of `names` in the store was published with that timestamp and value.
/// `check_against_reference`, retried for up to 3 s: the reference subscriber
/// may see a message a moment after the gateway stored it.
async fn settled_check(store: &Store, names: &[String], seen: &Reference) -> (usize, Vec<String>) {
    let mut result = check_against_reference(store, names, seen);
    for _ in 0..30 {
        if result.1.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        result = check_against_reference(store, names, seen);
    }
    result
}

fn check_against_reference(store: &Store, names: &[String], seen: &Reference) -> (usize, Vec<String>) {
    let seen = seen.lock();
    let mut checked = 0;
    let mut problems = Vec::new();
    for n in names {
        for (ts, v, q) in stored(store, n) {
            if q != Quality::GOOD.0 {
                continue;
            }
            match seen.get(n).and_then(|m| m.get(&ts)) {
                Some(x) if *x == v => checked += 1,
                Some(x) => problems.push(format!("{n} @ {ts}: stored {v}, published {x}")),
                None => problems.push(format!("{n} @ {ts}: stored {v}, never published at that time")),
            }
        }
    }
    (checked, problems)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mqtt_source_against_linesim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/scenarios/demo.toml");
    let mut scenario = Scenario::load(std::path::Path::new(path)).expect("demo scenario");
    scenario.opcua.listen = "127.0.0.1:0".into();
    scenario.opcua.pki_dir = dir.path().join("pki").display().to_string();
    scenario.modbus.listen = "127.0.0.1:0".into();
    scenario.mqtt.listen = "127.0.0.1:0".into();
    let opts = LiveOptions { speed: 20.0, skip_ns: 0, start_ns: None, truth: None };
    let running = linesim::server::Running::start(&scenario, path, opts).await.expect("linesim starts");
    let broker = running.mqtt.addr;
    let catalog = running.line.feed.catalog.clone();

    let seen: Reference = Arc::default();
    let reference = reference_subscriber(broker, &catalog, seen.clone()).await;
    let proxy = Proxy::start("127.0.0.1:0".parse().expect("addr"), broker).await;
    let proxy_addr = proxy.addr;

    let (config, vib, energy) = gateway_config(&catalog, &format!("mqtt://{proxy_addr}"), "", &dir.path().join("data"));
    assert_eq!((vib.len(), energy.len()), (6, 12), "six machines, one vib_de RMS and two meters each");
    let gw = Gateway::start(&config);
    let (store, health) = (gw.store.clone(), gw.health.clone());
    let snapshot = || health.snapshot().into_iter().next().expect("one source");

    // 1. Samples arrive, with the payloads' timestamps and values.
    let enough = |names: &[String], n: usize| {
        names.iter().all(|name| stored(&store, name).iter().filter(|s| s.2 == Quality::GOOD.0).count() >= n)
    };
    wait_until("JSON and Sparkplug samples in the store", Duration::from_secs(40), || {
        enough(&vib, 3) && enough(&energy, 2)
    })
    .await;
    assert_eq!(snapshot().state, SourceState::Connected);
    let all: Vec<String> = vib.iter().chain(&energy).cloned().collect();
    let result = settled_check(&store, &all, &seen).await;
    assert!(result.1.is_empty(), "stored samples differ from the published ones:\n{}", result.1.join("\n"));
    assert!(result.0 >= vib.len() * 3 + energy.len() * 2, "checked {} samples", result.0);
    // The labelled tag: one series per machine (label from topic level 3), each
    // holding what that machine's own tag holds (the same messages).
    for name in &vib {
        let asset = &catalog.tags.iter().find(|t| &t.name == name).expect("catalog tag").asset;
        let key = SeriesKey::with_labels(LABELLED_TAG, vec![("machine".to_string(), asset.to_string())]);
        let own: Vec<(i64, f64)> = stored(&store, name).iter().filter(|s| s.2 == 0).map(|s| (s.0, s.1)).collect();
        let labelled: Vec<(i64, f64)> =
            stored_key(&store, &key).iter().filter(|s| s.2 == 0).map(|s| (s.0, s.1)).collect();
        let common = own.iter().filter(|x| labelled.contains(x)).count();
        assert!(
            !labelled.is_empty() && common + 2 >= own.len().max(labelled.len()),
            "{key}: {labelled:?} vs {name}: {own:?}"
        );
    }
    // Timestamps are the line's (from the payloads), not the time of arrival: at
    // speed 20 the line's clock runs ahead of the wall clock.
    let newest = stored(&store, &vib[0]).last().map(|s| s.0).unwrap_or(0);
    assert!(newest > linepilot::domain::now_ns() + 5_000_000_000, "payload timestamps expected");

    // 2. A malformed message is counted, marks its tag bad, and nothing stops.
    reference.publish(MALFORMED_TOPIC, QoS::AtLeastOnce, false, b"{\"v\": 1.5,".to_vec()).await.expect("publish");
    wait_until("the malformed message counted", Duration::from_secs(10), || snapshot().malformed >= 1).await;
    reference.publish(MALFORMED_TOPIC, QoS::AtLeastOnce, false, b"{\"v\": \"abc\"}".to_vec()).await.expect("publish");
    reference.publish(MALFORMED_TOPIC, QoS::AtLeastOnce, false, b"{\"v\": 7.25}".to_vec()).await.expect("publish");
    wait_until("a good value after the malformed ones", Duration::from_secs(10), || {
        stored(&store, MALFORMED_TAG).iter().any(|s| s.1 == 7.25 && s.2 == Quality::GOOD.0)
    })
    .await;
    let m = stored(&store, MALFORMED_TAG);
    assert_eq!(m.iter().filter(|s| s.2 == Quality::BAD_DECODING.0).count(), 2, "{m:?}");
    let h = snapshot();
    assert_eq!(h.malformed, 2);
    assert_eq!(h.state, SourceState::Connected);

    // 2b. A tag with `deadband = 0.1`: only moves of more than 0.1 from the last kept value are kept.
    for v in ["1.0", "1.05", "1.2", "1.15", "1.25", "2.0", "-1"] {
        reference.publish(DEADBAND_TOPIC, QoS::AtLeastOnce, false, v.as_bytes().to_vec()).await.expect("publish");
    }
    wait_until("the deadband tag's last value", Duration::from_secs(10), || {
        stored(&store, DEADBAND_TAG).iter().any(|s| s.1 == -1.0)
    })
    .await;
    let kept: Vec<f64> = stored(&store, DEADBAND_TAG).iter().map(|s| s.1).collect();
    assert_eq!(kept, [1.0, 1.2, 2.0, -1.0], "1.05, 1.15 and 1.25 are within 0.1 of the last kept value");
    assert_eq!(snapshot().deadband_suppressed, 3);

    // 3. The broker goes away: comms loss; it comes back on the same port: samples resume.
    let before = stored(&store, &vib[0]).len();
    proxy.stop();
    wait_until("the source to notice the broker is gone", Duration::from_secs(20), || {
        snapshot().state == SourceState::Down
    })
    .await;
    assert!(snapshot().reconnects >= 1);
    wait_until("a BAD_COMMS sample to mark the gap", Duration::from_secs(10), || {
        all.iter().all(|n| stored(&store, n).iter().any(|s| s.2 == Quality::BAD_COMMS.0))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let proxy = Proxy::start(proxy_addr, broker).await;
    wait_until("the source to reconnect", Duration::from_secs(30), || snapshot().state == SourceState::Connected).await;
    let energy_before: HashMap<String, usize> = energy.iter().map(|n| (n.clone(), stored(&store, n).len())).collect();
    wait_until("samples after the reconnect", Duration::from_secs(30), || {
        vib.iter().all(|n| stored(&store, n).len() > before + 1)
            && energy.iter().all(|n| stored(&store, n).len() > energy_before[n])
    })
    .await;
    let after = check_against_reference(&store, &all, &seen);
    assert!(after.1.is_empty(), "after the reconnect:\n{}", after.1.join("\n"));
    assert!(after.0 > result.0);
    eprintln!("checked {} stored samples against the published ones; health: {:?}", after.0, snapshot());

    gw.stop().await;
    proxy.stop();
    drop(running);
}

/// A `mosquitto` broker on a fixed loopback port (killed on drop).
struct Mosquitto {
    child: std::process::Child,
}

impl Mosquitto {
    fn binary() -> Option<std::path::PathBuf> {
        ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
    }

    async fn start(bin: &std::path::Path, dir: &std::path::Path, port: u16) -> Mosquitto {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
            .expect("mosquitto.conf");
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawning mosquitto");
        let m = Mosquitto { child };
        wait_until_async("mosquitto to listen", Duration::from_secs(10), || async move {
            TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        m
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_until_async<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The same line through Debian's `mosquitto`: linesim publishes to it, the
/// gateway keeps a persistent session (`clean_session = false`) that survives a
/// dropped connection (the broker keeps the subscriptions: nothing is
/// subscribed again), then the broker itself restarts (session gone: the
/// gateway subscribes again). Fails with an install hint when mosquitto is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mqtt_source_against_mosquitto() {
    let Some(bin) = Mosquitto::binary() else {
        panic!("this test needs Debian's mosquitto broker: apt-get install mosquitto (.ci/run installs it)");
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mut broker_proc = Mosquitto::start(&bin, dir.path(), port).await;
    let broker: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/scenarios/demo.toml");
    let mut scenario = Scenario::load(std::path::Path::new(path)).expect("demo scenario");
    scenario.opcua.listen = "127.0.0.1:0".into();
    scenario.opcua.pki_dir = dir.path().join("pki").display().to_string();
    scenario.modbus.listen = "127.0.0.1:0".into();
    scenario.mqtt.broker = Some(format!("mqtt://{broker}"));
    let opts = LiveOptions { speed: 20.0, skip_ns: 0, start_ns: None, truth: None };
    let running = linesim::server::Running::start(&scenario, path, opts).await.expect("linesim starts");
    assert!(!running.mqtt.embedded);
    let catalog = running.line.feed.catalog.clone();

    let seen: Reference = Arc::default();
    let _reference = reference_subscriber(broker, &catalog, seen.clone()).await;
    let proxy = Proxy::start("127.0.0.1:0".parse().expect("addr"), broker).await;
    let proxy_addr = proxy.addr;
    let (config, vib, energy) =
        gateway_config(&catalog, &format!("mqtt://{proxy_addr}"), "clean_session = false", &dir.path().join("data"));
    let gw = Gateway::start(&config);
    let (store, health) = (gw.store.clone(), gw.health.clone());
    let snapshot = || health.snapshot().into_iter().next().expect("one source");
    let all: Vec<String> = vib.iter().chain(&energy).cloned().collect();
    let good = |n: &String| stored(&store, n).iter().filter(|s| s.2 == Quality::GOOD.0).count();
    let counts = || all.iter().map(good).collect::<Vec<usize>>();

    wait_until("samples through mosquitto", Duration::from_secs(40), || all.iter().all(|n| good(n) >= 2)).await;
    let result = settled_check(&store, &all, &seen).await;
    assert!(result.1.is_empty(), "stored samples differ from the published ones:\n{}", result.1.join("\n"));

    // The connection drops, the broker keeps the persistent session.
    proxy.stop();
    wait_until("comms loss", Duration::from_secs(20), || snapshot().state == SourceState::Down).await;
    let proxy = Proxy::start(proxy_addr, broker).await;
    wait_until("reconnect", Duration::from_secs(30), || snapshot().state == SourceState::Connected).await;
    let base = counts();
    wait_until("samples in the resumed session", Duration::from_secs(30), || {
        counts().iter().zip(&base).all(|(now, before)| now > before)
    })
    .await;
    let result = check_against_reference(&store, &all, &seen);
    assert!(result.1.is_empty(), "after the resumed session:\n{}", result.1.join("\n"));

    // The broker restarts: the session is gone, the gateway subscribes again.
    drop(broker_proc);
    wait_until("comms loss (broker down)", Duration::from_secs(20), || snapshot().state == SourceState::Down).await;
    broker_proc = Mosquitto::start(&bin, dir.path(), port).await;
    wait_until("reconnect to the new broker", Duration::from_secs(30), || snapshot().state == SourceState::Connected)
        .await;
    let base = counts();
    wait_until("samples after the broker restart", Duration::from_secs(40), || {
        counts().iter().zip(&base).all(|(now, before)| now > before)
    })
    .await;
    let h = snapshot();
    assert!(h.reconnects >= 2, "{h:?}");
    assert_eq!(h.malformed, 0, "{h:?}");
    eprintln!("mosquitto: {} samples checked against the published ones; health: {h:?}", result.0);

    gw.stop().await;
    proxy.stop();
    drop(running);
    drop(broker_proc);
}

/// The same source speaking MQTT 5 (`protocol = "5"`) to mosquitto: plain and
/// JSON values arrive with their timestamps, a malformed payload is counted,
/// and after the broker restarts the source reconnects and subscribes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mqtt5_source_against_mosquitto() {
    let Some(bin) = Mosquitto::binary() else {
        panic!("this test needs Debian's mosquitto broker: apt-get install mosquitto (.ci/run installs it)");
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mut broker = Mosquitto::start(&bin, dir.path(), port).await;
    let text = format!(
        "[site]\nname = \"Plant\"\n[store]\ndata_dir = \"{}\"\n[[area]]\nid = \"hall\"\nname = \"Hall\"\n\
         [[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n[[asset]]\nid = \"a\"\nname = \"A\"\nline = \"line1\"\nkind = \"a\"\n\
         [[source]]\nid = \"v5\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{port}\"\nprotocol = \"5\"\nkeep_alive = \"5s\"\n\
         [[tag]]\nname = \"v5.plain\"\nasset = \"a\"\nsource = \"v5\"\ndescription = \"d\"\naddress = {{ topic = \"v5/plain\" }}\n\
         [[tag]]\nname = \"v5.json\"\nasset = \"a\"\nsource = \"v5\"\ndescription = \"d\"\naddress = {{ topic = \"v5/+/json\", json_path = \"$.v\", ts_path = \"$.ts\" }}\n",
        dir.path().join("data").display()
    );
    let config = Config::from_str_named(&text, "v5.toml").unwrap_or_else(|e| panic!("config:\n{e}"));
    let gw = Gateway::start(&config);
    gw.wait_state("v5", SourceState::Connected).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // SUBACK

    let publish = |port: u16, msgs: Vec<(&'static str, Vec<u8>)>| async move {
        let (client, mut events) = AsyncClient::new(MqttOptions::new("v5-test-pub", "127.0.0.1", port), 16);
        let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
        for (topic, payload) in msgs {
            client.publish(topic, QoS::AtLeastOnce, false, payload).await.expect("publish");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        pump.abort();
    };
    publish(
        port,
        vec![
            ("v5/plain", b"12.5".to_vec()),
            ("v5/x/json", br#"{"v": 3.25, "ts": 1700000000123}"#.to_vec()),
            ("v5/x/json", br#"{"v": "#.to_vec()),
        ],
    )
    .await;
    let values = |name: &str| stored(&gw.store, name);
    wait_until("MQTT 5 values", Duration::from_secs(20), || {
        values("v5.plain").iter().any(|s| s.1 == 12.5) && values("v5.json").iter().any(|s| s.1 == 3.25)
    })
    .await;
    let json = values("v5.json");
    assert!(json.iter().any(|s| s.0 == 1_700_000_000_123_000_000 && s.1 == 3.25 && s.2 == 0), "{json:?}");
    wait_until("the malformed one counted", Duration::from_secs(10), || gw.source("v5").malformed == 1).await;

    // The broker restarts: the session is gone, the source subscribes again.
    drop(broker);
    gw.wait_state("v5", SourceState::Down).await;
    broker = Mosquitto::start(&bin, dir.path(), port).await;
    gw.wait_state("v5", SourceState::Connected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish(port, vec![("v5/plain", b"13.5".to_vec())]).await;
    wait_until("a value after the restart", Duration::from_secs(20), || values("v5.plain").iter().any(|s| s.1 == 13.5))
        .await;
    assert!(gw.source("v5").reconnects >= 1);
    gw.stop().await;
    drop(broker);
}
