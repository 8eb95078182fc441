//! The MQTT side against independent peers: the Python interop script
//! (paho-mqtt + protobuf built from tests/interop/sparkplug_b.proto), and
//! rumqttc subscribers watching the Sparkplug session across a comms loss,
//! a broken connection and the end of the feed.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linesim::line::{Binding, Catalog, Down, Feed, Frame, Val};
use linesim::server::mqtt::{self, MqttServer};
use linesim::server::sparkplug::{metric, Metric, Payload};
use linesim::server::MqttConfig;
use prost::Message as _;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Simulated start: 2024-01-01T00:00:00Z.
const T0_MS: i64 = 1_704_067_200_000;
/// Simulated time per frame (the model's step).
const STEP_MS: i64 = 100;

fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Tag `i` samples every `1 + i % 3` frames, so DDATA and JSON carry varying subsets.
fn sample_frame(i: usize, k: i64) -> i64 {
    let p = 1 + (i % 3) as i64;
    k - k % p
}

/// The value of tag `i` sampled at frame `k`: deterministic, rounded to the tag's decimals.
fn value(catalog: &Catalog, i: usize, k: i64) -> Val {
    let t = &catalog.tags[i];
    let x = i as f64 * 1.5 + k as f64 * 0.37 + 0.123_456;
    if t.ty.is_integer() {
        Val::I64(x as i64)
    } else if t.ty == linesim::line::PlcType::Bool {
        Val::Bool(k % 2 == 0)
    } else {
        let s = 10f64.powi(t.decimals as i32);
        Val::F64((x * s).round() / s)
    }
}

fn frame(catalog: &Catalog, k: i64, down: bool) -> Frame {
    let n = catalog.len();
    let values = (0..n).map(|i| value(catalog, i, sample_frame(i, k))).collect();
    let stamps = (0..n).map(|i| (T0_MS + sample_frame(i, k) * STEP_MS) * 1_000_000).collect();
    Frame { ts_ns: (T0_MS + k * STEP_MS) * 1_000_000, values, stamps, down: Down { mqtt: down, ..Down::default() } }
}

fn json_value(v: Val) -> serde_json::Value {
    match v {
        Val::F64(x) => x.into(),
        Val::I64(x) => x.into(),
        Val::Bool(b) => b.into(),
    }
}

/// The expected-values file of tests/interop/mqtt_client.py for frames `0..frames`.
fn expected_file(catalog: &Catalog, frames: i64) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut topics = Map::new();
    for (topic, tags) in catalog.json_topics() {
        let fields: Vec<Value> = tags
            .iter()
            .filter_map(|&i| match &catalog.tags[i].binding {
                Binding::MqttJson { field, .. } => Some(Value::from(*field)),
                _ => None,
            })
            .collect();
        topics.insert(topic, fields.into());
    }
    let mut devices = Map::new();
    for (device, tags) in catalog.sparkplug_devices() {
        let mut metrics = Map::new();
        for i in tags {
            if let Binding::Sparkplug { metric, alias, .. } = &catalog.tags[i].binding {
                metrics.insert(metric.to_string(), json!({"alias": alias, "datatype": 10}));
            }
        }
        devices.insert(device.to_string(), metrics.into());
    }
    let mut out = Map::new();
    for k in 0..frames {
        let f = frame(catalog, k, false);
        let mut js = Map::new();
        for (topic, tags) in catalog.json_topics() {
            let mut obj = Map::new();
            for i in tags {
                if let Binding::MqttJson { field, .. } = &catalog.tags[i].binding {
                    obj.insert(field.to_string(), json_value(f.values[i]));
                }
            }
            js.insert(topic, obj.into());
        }
        let mut sp = Map::new();
        for (i, t) in catalog.tags.iter().enumerate() {
            if let Binding::Sparkplug { alias, .. } = &t.binding {
                sp.insert(alias.to_string(), json_value(f.values[i]));
            }
        }
        out.insert((T0_MS + k * STEP_MS).to_string(), json!({"json": js, "sparkplug": sp}));
    }
    json!({"json_topics": topics, "devices": devices, "frames": out})
}

fn require_python() {
    let ok = Command::new("python3")
        .args(["-c", "import paho.mqtt.client, google.protobuf"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 with the packages paho-mqtt and protobuf is required: python3 -m pip install paho-mqtt protobuf"
    );
}

fn quiet_logs() {
    let filter = tracing_subscriber::EnvFilter::new(format!("info,{}", mqtt::BROKER_LOG_DIRECTIVE));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

fn cfg(broker: Option<String>, client_id: &str) -> MqttConfig {
    MqttConfig { listen: "127.0.0.1:0".into(), broker, client_id: client_id.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_reads_json_and_sparkplug() {
    quiet_logs();
    require_python();
    let (catalog, _) = Catalog::build();
    let catalog = Arc::new(catalog);
    // Frames every 50 ms of wall time (the model at speed 2): enough DDATA for seq to wrap.
    const FRAMES: i64 = 600;
    let dir = std::env::temp_dir().join(format!("linesim-mqtt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let expected = dir.join("expected.json");
    std::fs::write(&expected, expected_file(&catalog, FRAMES).to_string()).expect("write expected values");

    let (tx, rx) = watch::channel(Arc::new(frame(&catalog, 0, false)));
    let feed = Feed { catalog: catalog.clone(), frames: rx };
    let server = mqtt::start(&cfg(None, "linesim-py"), feed).await.expect("MQTT side starts");
    assert!(server.embedded);
    assert_ne!(server.addr.port(), 0);

    let cat = catalog.clone();
    let feeder = tokio::spawn(async move {
        for k in 1..FRAMES {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if tx.send(Arc::new(frame(&cat, k, false))).is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(600)).await; // hold the last frame
    });

    let port = server.addr.port().to_string();
    let script_expected = expected.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .current_dir(repo_root())
            .args(["tests/interop/mqtt_client.py", "--port", &port, "--seconds", "6", "--require-wrap"])
            .arg("--expected")
            .arg(&script_expected)
            .output()
    })
    .await
    .expect("join")
    .expect("python3 runs");
    feeder.abort();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(out.status.success(), "mqtt_client.py failed:\n{stdout}\n{stderr}");
}

/// A subscriber to the line's Sparkplug topics.
struct Watcher {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    _task: JoinHandle<()>,
}

impl Watcher {
    async fn new(addr: std::net::SocketAddr, id: &str) -> Watcher {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready = Some(ready_tx);
        client.subscribe("spBv1.0/line1/#", QoS::AtLeastOnce).await.expect("subscribe queued");
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("watcher connection failed: {e}"),
                }
            }
        });
        timeout(Duration::from_secs(10), ready_rx).await.expect("SUBACK in time").expect("SUBACK");
        Watcher { client, rx, _task: task }
    }

    async fn rebirth(&self) {
        let p = Payload {
            metrics: vec![Metric {
                name: Some("Node Control/Rebirth".into()),
                datatype: Some(11),
                value: Some(metric::Value::BooleanValue(true)),
                ..Default::default()
            }],
            ..Default::default()
        };
        self.client
            .publish("spBv1.0/line1/NCMD/energy", QoS::AtLeastOnce, false, p.encode_to_vec())
            .await
            .expect("NCMD queued");
    }

    /// The next Sparkplug message of type `kind` (NBIRTH, NDEATH, ...), with the
    /// types of the node's messages skipped on the way.
    async fn next(&mut self, kind: &str, within: Duration, skipped: &mut Vec<String>) -> Payload {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (topic, payload) = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => panic!("watcher closed while waiting for {kind}"),
                Err(_) => panic!("no {kind} within {within:?} (saw {skipped:?})"),
            };
            let ty = topic.split('/').nth(2).unwrap_or("").to_string();
            if ty == "NCMD" {
                continue;
            }
            if ty == kind {
                return Payload::decode(payload.as_slice()).expect("Sparkplug payload decodes");
            }
            skipped.push(ty);
        }
    }

    /// Everything the node published within `d`.
    async fn drain(&mut self, d: Duration) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some((topic, _))) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            if !topic.contains("/NCMD/") {
                seen.push(topic);
            }
        }
        seen
    }
}

fn bd_seq(p: &Payload) -> u64 {
    let m = p.metrics.iter().find(|m| m.name.as_deref() == Some("bdSeq")).expect("bdSeq metric");
    assert_eq!(m.datatype, Some(4), "bdSeq is Int64");
    match m.value {
        Some(metric::Value::LongValue(v)) => v,
        ref other => panic!("bdSeq value {other:?}"),
    }
}

async fn births(w: &mut Watcher, devices: usize) -> u64 {
    let mut skipped = Vec::new();
    let nbirth = w.next("NBIRTH", Duration::from_secs(10), &mut skipped).await;
    assert_eq!(nbirth.seq, Some(0));
    for k in 0..devices {
        let d = w.next("DBIRTH", Duration::from_secs(5), &mut skipped).await;
        assert_eq!(d.seq, Some(k as u64 + 1), "DBIRTHs follow the NBIRTH in sequence");
        assert!(d.metrics.iter().all(|m| m.name.is_some() && m.alias.is_some() && m.datatype == Some(10)));
    }
    bd_seq(&nbirth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comms_loss_fires_the_ndeath_will_and_the_node_reborns_with_a_new_bdseq() {
    quiet_logs();
    let (catalog, _) = Catalog::build();
    let catalog = Arc::new(catalog);
    let devices = catalog.sparkplug_devices().len();
    let (tx, rx) = watch::channel(Arc::new(frame(&catalog, 0, false)));
    let server: MqttServer =
        mqtt::start(&cfg(None, "linesim-loss"), Feed { catalog: catalog.clone(), frames: rx }).await.expect("starts");
    let mut w = Watcher::new(server.addr, "watch-loss").await;
    w.rebirth().await;
    let bd0 = births(&mut w, devices).await;

    // Data flows (every 6th frame both metrics of every device have a new sample).
    let mut k = 6;
    tx.send(Arc::new(frame(&catalog, k, false))).expect("feed");
    let mut skipped = Vec::new();
    w.next("DDATA", Duration::from_secs(5), &mut skipped).await;

    // The uplink goes down: the broker publishes the will, then silence.
    k += 6;
    tx.send(Arc::new(frame(&catalog, k, true))).expect("feed");
    let death = w.next("NDEATH", Duration::from_secs(5), &mut skipped).await;
    assert_eq!(bd_seq(&death), bd0, "the NDEATH will carries the session's bdSeq");
    assert_eq!(death.seq, None, "NDEATH has no seq");
    for _ in 0..5 {
        k += 6;
        tx.send(Arc::new(frame(&catalog, k, true))).expect("feed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = w.drain(Duration::from_millis(300)).await;
    assert!(during.is_empty(), "nothing is published during a comms loss: {during:?}");

    // The uplink is back: a new session, births again.
    k += 6;
    tx.send(Arc::new(frame(&catalog, k, false))).expect("feed");
    let bd1 = births(&mut w, devices).await;
    assert_eq!(bd1, (bd0 + 1) % 256, "a new connection takes the next bdSeq");

    // The feed ends: the node says goodbye with its own NDEATH.
    drop(tx);
    let death = w.next("NDEATH", Duration::from_secs(5), &mut skipped).await;
    assert_eq!(bd_seq(&death), bd1);
    timeout(Duration::from_secs(5), server.publisher).await.expect("publisher stops").expect("publisher task ok");
}

/// A TCP relay between the publisher and the broker whose connections can be cut.
struct Relay {
    addr: std::net::SocketAddr,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

impl Relay {
    async fn new(upstream: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let addr = listener.local_addr().expect("relay addr");
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let handle = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                list.lock().expect("relay list").push(handle);
            }
        });
        Relay { addr, conns, _accept: accept }
    }

    /// Drops every relayed connection at once (both sockets close, no MQTT DISCONNECT).
    fn cut(&self) -> usize {
        let mut list = self.conns.lock().expect("relay list");
        let n = list.iter().filter(|h| !h.is_finished()).count();
        for h in list.drain(..) {
            h.abort();
        }
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_connection_fires_the_will_and_the_publisher_reconnects() {
    quiet_logs();
    let (catalog, _) = Catalog::build();
    let catalog = Arc::new(catalog);
    let devices = catalog.sparkplug_devices().len();
    let broker = mqtt::start_broker("127.0.0.1:0").await.expect("broker starts");
    let relay = Relay::new(broker).await;
    let (tx, rx) = watch::channel(Arc::new(frame(&catalog, 0, false)));
    let url = format!("mqtt://{}", relay.addr);
    let server = mqtt::start(&cfg(Some(url), "linesim-relay"), Feed { catalog: catalog.clone(), frames: rx })
        .await
        .expect("starts");
    assert!(!server.embedded);
    assert_eq!(server.addr, relay.addr);

    let mut w = Watcher::new(broker, "watch-relay").await;
    w.rebirth().await;
    let bd0 = births(&mut w, devices).await;

    assert_eq!(relay.cut(), 1, "one relayed connection (the publisher's)");
    let mut skipped = Vec::new();
    let death = w.next("NDEATH", Duration::from_secs(5), &mut skipped).await;
    assert_eq!(bd_seq(&death), bd0);
    let bd1 = births(&mut w, devices).await;
    assert_eq!(bd1, (bd0 + 1) % 256);

    // Still publishing after the reconnect.
    tx.send(Arc::new(frame(&catalog, 6, false))).expect("feed");
    w.next("DDATA", Duration::from_secs(5), &mut skipped).await;
}
