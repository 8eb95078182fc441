//! The MQTT side of the line: an embedded broker (rumqttd) unless an
//! external one is configured, and one MQTT client (rumqttc, MQTT 3.1.1)
//! that plays two devices of the plant network:
//!
//! - the wireless vibration gateway, publishing one JSON object per sensor
//!   (`plant/line1/<asset>/vib_de|vib_nde`) each time the sensor samples:
//!   `{"ts":"2024-01-01T00:00:10.000Z","ts_ms":1704067210000,"rms":1.234,"peak":0.456,"temp":45.6}`.
//!   QoS 0, not retained: a sample is superseded by the next one ten seconds
//!   later, a lost one is not worth a retransmission (the same choice
//!   Sparkplug makes for its data messages), and QoS 0 keeps no in-flight
//!   state that a reconnect would have to replay out of order;
//! - the energy meters, as the Sparkplug B v3.0 edge node
//!   `spBv1.0/line1/+/energy` with one device per machine: NDEATH as the
//!   connection's will (QoS 1, carrying the session's `bdSeq`), NBIRTH
//!   (seq 0, `bdSeq`, `Node Control/Rebirth`), one DBIRTH per device with
//!   every metric by name, alias, datatype and value, then DDATA with the
//!   changed metrics by alias only; `seq` counts 0..=255 across all the
//!   node's messages. An NCMD writing `Node Control/Rebirth = true` makes
//!   the node publish its births again (same `bdSeq`: same MQTT session).
//!
//! # Sessions and comms loss
//!
//! Each MQTT connection is a fresh session (clean session, new `bdSeq`
//! registered in the will). When the connection breaks (broker restart,
//! network error) the node waits (0.5 s, doubling up to 5 s) and connects
//! again with the next `bdSeq`, then births again.
//!
//! While `frame.down.mqtt` is true the uplink is down: the client closes its
//! TCP connection *without* an MQTT DISCONNECT, so the broker publishes the
//! NDEATH will at once (a real gateway that loses its uplink cannot publish
//! anything; its broker publishes the will when the keep-alive expires, here
//! the socket close makes that immediate and deterministic). Nothing is
//! published during the loss (the samples taken meanwhile are lost, the
//! gateway has no store-and-forward); when the loss ends the node reconnects
//! with a new `bdSeq` and births with the current values.
//!
//! When the feed ends (the model stopped), the node publishes its NDEATH
//! itself and disconnects cleanly, as Sparkplug asks of an edge node that
//! goes offline on purpose.
//!
//! # Rates at speed 1
//!
//! 12 JSON topics sampled every 10 s: 1.2 messages/s, payload ~92 bytes.
//! 6 devices whose two metrics are sampled every 5 s: 1.2 DDATA/s of 49
//! bytes (both metrics; 29 bytes for one, so up to 2.4/s if the model
//! staggers the two samples). Per (re)connection or rebirth: an NBIRTH of 64
//! bytes and six DBIRTHs of ~68 bytes; the NDEATH is 27 bytes. In all
//! ~2.4 messages/s, ~170 bytes/s of payload.
//!
//! # The embedded broker
//!
//! rumqttd 0.20 binds its listener inside its own thread and cannot report
//! the port it got, so a port-0 listen address is resolved first by binding
//! a `std::net::TcpListener` on it and dropping it (the broker rebinds that
//! port right after; another process could take it in between, which
//! `start` then reports as an error). The broker has no shutdown: its
//! threads live until the process exits. Its logs are under the `rumqttd`
//! tracing target, which a subscriber should silence ([`BROKER_LOG_DIRECTIVE`]);
//! it logs every client disconnect as an error.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rumqttc::{AsyncClient, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::sparkplug::{self, datatype, metric, MessageType, Metric, Payload};
use super::MqttConfig;
use crate::line::catalog::{SPARKPLUG_GROUP, SPARKPLUG_NODE};
use crate::line::{Binding, Catalog, Feed, Frame, PlcType, Val};

/// An `EnvFilter` directive that silences the embedded broker's own logs.
pub const BROKER_LOG_DIRECTIVE: &str = "rumqttd=off";

/// Keep-alive of the publisher's connection.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Reconnect delays after a failed or broken connection.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long `start` waits for the embedded broker to accept MQTT connections.
const BROKER_STARTUP: Duration = Duration::from_secs(10);
/// Capacity of the client's request channel (a frame publishes at most 18 messages).
const REQUEST_CAPACITY: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("bad MQTT listen address {addr:?}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot bind the embedded MQTT broker on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("the embedded MQTT broker did not start on {addr}: {reason}")]
    BrokerStart { addr: SocketAddr, reason: String },
    #[error("bad MQTT broker URL {0:?}: expected mqtt://host[:port] (or tcp://)")]
    BrokerUrl(String),
    #[error("cannot resolve MQTT broker {url}: {source}")]
    Resolve { url: String, source: std::io::Error },
}

/// A running MQTT side: the publisher task, and the broker when embedded.
pub struct MqttServer {
    /// Where the broker listens: the embedded broker's bound address, or the
    /// external broker's resolved address.
    pub addr: SocketAddr,
    /// True when `addr` is the embedded rumqttd broker.
    pub embedded: bool,
    /// The publisher; it ends when the feed ends.
    pub publisher: JoinHandle<()>,
}

/// Starts the embedded broker (unless `cfg.broker` names an external one)
/// and the publisher. The publisher connects in the background and keeps
/// reconnecting; it stops when the feed's sender is dropped.
pub async fn start(cfg: &MqttConfig, feed: Feed) -> Result<MqttServer, MqttError> {
    let (host, port, addr, embedded) = match &cfg.broker {
        Some(url) => {
            let (host, port) = parse_broker_url(url)?;
            let addr = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|source| MqttError::Resolve { url: url.clone(), source })?
                .next()
                .ok_or_else(|| MqttError::Resolve {
                    url: url.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
                })?;
            (host, port, addr, false)
        }
        None => {
            let addr = start_broker(&cfg.listen).await?;
            (addr.ip().to_string(), addr.port(), addr, true)
        }
    };
    info!(%addr, embedded, client_id = %cfg.client_id, "MQTT publisher starting");
    let publisher = Publisher::new(feed, host, port, cfg.client_id.clone());
    let publisher = tokio::spawn(publisher.run());
    Ok(MqttServer { addr, embedded, publisher })
}

/// Starts a rumqttd broker (MQTT 3.1.1, plain TCP, no auth) on `listen`
/// (port 0 picks a free port) and returns once it accepts MQTT connections.
pub async fn start_broker(listen: &str) -> Result<SocketAddr, MqttError> {
    let want = listen
        .to_socket_addrs()
        .map_err(|source| MqttError::Listen { addr: listen.into(), source })?
        .next()
        .ok_or_else(|| MqttError::Listen {
            addr: listen.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        })?;
    // rumqttd cannot tell which port it bound: take one here and hand it over.
    let addr = TcpListener::bind(want)
        .and_then(|l| l.local_addr())
        .map_err(|source| MqttError::Bind { addr: want.to_string(), source })?;

    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let mut broker = rumqttd::Broker::new(broker_config(addr));
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            // Returns only when its listener thread ended, i.e. failed.
            let r = broker.start();
            flag.store(true, Ordering::SeqCst);
            if let Err(e) = r {
                warn!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| MqttError::BrokerStart { addr, reason: format!("cannot spawn its thread: {e}") })?;

    let deadline = tokio::time::Instant::now() + BROKER_STARTUP;
    loop {
        if stopped.load(Ordering::SeqCst) {
            return Err(MqttError::BrokerStart { addr, reason: "its listener failed (port taken?)".into() });
        }
        let err = match probe(addr).await {
            Ok(()) => break,
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(MqttError::BrokerStart { addr, reason: err });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    info!(%addr, "embedded MQTT broker listening");
    Ok(addr)
}

/// The broker's configuration (what `rumqttd.toml` would hold): one MQTT
/// 3.1.1 listener, no console, no metrics, modest in-memory logs.
fn broker_config(addr: SocketAddr) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: 256 * 1024,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "linesim-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 200,
            // Per subscribed filter: at most 4 x 1 MiB of messages kept for slow readers.
            max_segment_size: 1024 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

/// One MQTT connect/ConnAck/disconnect round trip.
async fn probe(addr: SocketAddr) -> Result<(), String> {
    let mut opts = MqttOptions::new("linesim-probe", addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(opts, 4);
    let round_trip = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    client.disconnect().await.map_err(|e| e.to_string())?;
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), round_trip).await.map_err(|_| "timed out".to_string())?
}

/// `mqtt://host[:port]` or `tcp://host[:port]` (default port 1883).
pub fn parse_broker_url(url: &str) -> Result<(String, u16), MqttError> {
    let bad = || MqttError::BrokerUrl(url.to_string());
    let rest = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")).ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(bad());
    }
    // [v6]:port, host:port, host
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or_else(bad)?;
        match tail.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if tail.is_empty() => (h, None),
            None => return Err(bad()),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| bad())?,
        None => 1883,
    };
    Ok((host.to_string(), port))
}

fn ns_to_ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

/// A JSON number (or boolean) for a value; non-finite floats become `null`.
fn json_value(v: Val) -> String {
    match v {
        Val::F64(x) => serde_json::Value::from(x).to_string(),
        Val::I64(x) => x.to_string(),
        Val::Bool(b) => b.to_string(),
    }
}

/// The JSON object of one wireless sensor topic.
pub fn json_payload(catalog: &Catalog, tags: &[usize], frame: &Frame) -> String {
    let stamp = tags.iter().map(|&i| frame.stamps[i]).max().unwrap_or(frame.ts_ns);
    let ms = ns_to_ms(stamp);
    let mut out = format!("{{\"ts\":\"{}\",\"ts_ms\":{ms}", crate::line::truth::rfc3339_ms(ms * 1_000_000));
    for &i in tags {
        if let Binding::MqttJson { field, .. } = &catalog.tags[i].binding {
            out.push_str(&format!(",\"{field}\":{}", json_value(frame.values[i])));
        }
    }
    out.push('}');
    out
}

/// A tag's Sparkplug datatype and value.
fn sparkplug_value(ty: PlcType, v: Val) -> (u32, metric::Value) {
    use metric::Value::*;
    let int = v.as_f64();
    match ty {
        PlcType::Bool => (datatype::BOOLEAN, BooleanValue(int != 0.0)),
        PlcType::U16 => (datatype::UINT16, IntValue(int.clamp(0.0, u16::MAX as f64) as u32)),
        PlcType::I16 => (datatype::INT16, IntValue(int.clamp(i16::MIN as f64, i16::MAX as f64) as i32 as u32)),
        PlcType::U32 => (datatype::UINT32, IntValue(int.clamp(0.0, u32::MAX as f64) as u32)),
        PlcType::I32 => (datatype::INT32, IntValue(int.clamp(i32::MIN as f64, i32::MAX as f64) as i32 as u32)),
        PlcType::F32 => (datatype::FLOAT, FloatValue(int as f32)),
        PlcType::F64 => (datatype::DOUBLE, DoubleValue(int)),
    }
}

struct JsonTopic {
    topic: String,
    tags: Vec<usize>,
}

struct DeviceMetric {
    tag: usize,
    name: &'static str,
    alias: u64,
    ty: PlcType,
}

struct Device {
    birth_topic: String,
    data_topic: String,
    metrics: Vec<DeviceMetric>,
}

/// How a session ended.
enum SessionEnd {
    FeedEnded,
    CommsLoss,
    Broken { was_connected: bool },
}

/// What the connection's poller reports to the session.
enum ConnEvent {
    Connected,
    Publish { topic: String, payload: Vec<u8> },
    Disconnected,
}

/// Aborts the connection's poller (dropping its socket, no DISCONNECT) when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Publisher {
    feed: Feed,
    host: String,
    port: u16,
    client_id: String,
    json: Vec<JsonTopic>,
    devices: Vec<Device>,
    ncmd_topic: String,
    ndeath_topic: String,
    nbirth_topic: String,
    /// Stamps of the MQTT tags as last published.
    last: Vec<i64>,
    /// bdSeq of the next connection (0..=255).
    next_bd_seq: u64,
    /// seq of the next node message (NBIRTH resets it to 0).
    seq: u8,
    /// Messages and bytes published, for the debug log.
    sent: (u64, u64),
}

impl Publisher {
    fn new(feed: Feed, host: String, port: u16, client_id: String) -> Publisher {
        let catalog = feed.catalog.clone();
        let json = catalog.json_topics().into_iter().map(|(topic, tags)| JsonTopic { topic, tags }).collect();
        let devices = catalog
            .sparkplug_devices()
            .into_iter()
            .map(|(device, tags)| Device {
                birth_topic: sparkplug::topic(SPARKPLUG_GROUP, MessageType::DBirth, SPARKPLUG_NODE, Some(device)),
                data_topic: sparkplug::topic(SPARKPLUG_GROUP, MessageType::DData, SPARKPLUG_NODE, Some(device)),
                metrics: tags
                    .into_iter()
                    .filter_map(|i| match &catalog.tags[i].binding {
                        Binding::Sparkplug { metric, alias, .. } => {
                            Some(DeviceMetric { tag: i, name: metric, alias: *alias, ty: catalog.tags[i].ty })
                        }
                        _ => None,
                    })
                    .collect(),
            })
            .collect();
        Publisher {
            last: vec![i64::MIN; catalog.len()],
            feed,
            host,
            port,
            client_id,
            json,
            devices,
            ncmd_topic: sparkplug::topic(SPARKPLUG_GROUP, MessageType::NCmd, SPARKPLUG_NODE, None),
            ndeath_topic: sparkplug::topic(SPARKPLUG_GROUP, MessageType::NDeath, SPARKPLUG_NODE, None),
            nbirth_topic: sparkplug::topic(SPARKPLUG_GROUP, MessageType::NBirth, SPARKPLUG_NODE, None),
            next_bd_seq: 0,
            seq: 0,
            sent: (0, 0),
        }
    }

    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            if !self.wait_for_uplink().await {
                break;
            }
            let bd_seq = self.next_bd_seq;
            self.next_bd_seq = (self.next_bd_seq + 1) % 256;
            match self.session(bd_seq).await {
                SessionEnd::FeedEnded => break,
                SessionEnd::CommsLoss => backoff = MIN_BACKOFF,
                SessionEnd::Broken { was_connected } => {
                    if was_connected {
                        backoff = MIN_BACKOFF;
                    }
                    if !self.sleep(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        info!(messages = self.sent.0, bytes = self.sent.1, "MQTT publisher stopped (feed ended)");
    }

    /// Waits while the uplink is down; false when the feed ended.
    async fn wait_for_uplink(&mut self) -> bool {
        while self.feed.frames.borrow_and_update().down.mqtt {
            if self.feed.frames.changed().await.is_err() {
                return false;
            }
        }
        true
    }

    /// Sleeps, following the feed; false when the feed ended.
    async fn sleep(&mut self, d: Duration) -> bool {
        let deadline = tokio::time::sleep(d);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return true,
                r = self.feed.frames.changed() => if r.is_err() { return false },
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        u64::from(s)
    }

    fn death_payload(bd_seq: u64, ts_ms: u64) -> Vec<u8> {
        Payload {
            timestamp: Some(ts_ms),
            metrics: vec![Metric {
                name: Some(sparkplug::BD_SEQ.into()),
                timestamp: Some(ts_ms),
                datatype: Some(datatype::INT64),
                value: Some(metric::Value::LongValue(bd_seq)),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// One MQTT connection, from CONNECT to its end.
    async fn session(&mut self, bd_seq: u64) -> SessionEnd {
        let now_ms = ns_to_ms(self.feed.frames.borrow().ts_ns).max(0) as u64;
        let mut opts = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        opts.set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(256 * 1024, 256 * 1024)
            .set_last_will(LastWill::new(
                self.ndeath_topic.clone(),
                Self::death_payload(bd_seq, now_ms),
                QoS::AtLeastOnce,
                false,
            ));
        let (client, mut eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
        let (tx, mut rx) = mpsc::channel(32);
        let (host, port) = (self.host.clone(), self.port);
        let _poller = AbortOnDrop(tokio::spawn(async move {
            loop {
                let ev = match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => ConnEvent::Connected,
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        ConnEvent::Publish { topic: p.topic.clone(), payload: p.payload.to_vec() }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => ConnEvent::Disconnected,
                    Ok(_) => continue,
                    Err(e) => {
                        warn!(%host, port, error = %e, "MQTT connection lost");
                        return; // the closed channel tells the session
                    }
                };
                if tx.try_send(ev).is_err() {
                    warn!("MQTT publisher busy: incoming message dropped");
                }
            }
        }));

        let mut connected = false;
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ConnEvent::Connected) => {
                        connected = true;
                        info!(host = %self.host, port = self.port, bd_seq, "MQTT connected");
                        if self.feed.frames.borrow().down.mqtt {
                            return SessionEnd::CommsLoss;
                        }
                        // Sparkplug: subscribe to NCMD (QoS 1) before the NBIRTH.
                        if let Err(e) = client.subscribe(self.ncmd_topic.clone(), QoS::AtLeastOnce).await {
                            warn!(error = %e, "MQTT subscribe failed");
                            return SessionEnd::Broken { was_connected: true };
                        }
                        if !self.births(&client, bd_seq, true).await {
                            return SessionEnd::Broken { was_connected: true };
                        }
                    }
                    Some(ConnEvent::Publish { topic, payload }) => {
                        if topic != self.ncmd_topic {
                            debug!(%topic, "ignoring message");
                            continue;
                        }
                        match Payload::decode(payload.as_ref()) {
                            Ok(p) if p.requests_rebirth() => {
                                info!(bd_seq, "Sparkplug rebirth requested");
                                if !self.births(&client, bd_seq, false).await {
                                    return SessionEnd::Broken { was_connected: true };
                                }
                            }
                            Ok(p) => debug!(metrics = p.metrics.len(), "NCMD without a rebirth request ignored"),
                            Err(e) => warn!(error = %e, "undecodable NCMD payload ignored"),
                        }
                    }
                    Some(ConnEvent::Disconnected) | None => {
                        return SessionEnd::Broken { was_connected: connected };
                    }
                },
                r = self.feed.frames.changed() => {
                    if r.is_err() {
                        if connected {
                            self.goodbye(&client, &mut rx, bd_seq).await;
                        }
                        return SessionEnd::FeedEnded;
                    }
                    let frame = self.feed.frames.borrow_and_update().clone();
                    if frame.down.mqtt {
                        info!(bd_seq, "MQTT comms loss: connection dropped without DISCONNECT (the broker publishes NDEATH)");
                        return SessionEnd::CommsLoss;
                    }
                    if connected && !self.publish_changes(&client, &frame).await {
                        return SessionEnd::Broken { was_connected: true };
                    }
                }
            }
        }
    }

    /// Publishes one message; false when the connection is gone.
    async fn publish(&mut self, client: &AsyncClient, topic: &str, qos: QoS, payload: Vec<u8>) -> bool {
        let len = payload.len() as u64;
        match client.publish(topic, qos, false, payload).await {
            Ok(()) => {
                self.sent.0 += 1;
                self.sent.1 += len;
                true
            }
            Err(e) => {
                warn!(%topic, error = %e, "MQTT publish failed");
                false
            }
        }
    }

    /// NBIRTH then a DBIRTH per device, with the current values. `fresh`:
    /// a new connection, so the JSON sensors start from the current samples too.
    async fn births(&mut self, client: &AsyncClient, bd_seq: u64, fresh: bool) -> bool {
        let frame = self.feed.frames.borrow().clone();
        let ts = ns_to_ms(frame.ts_ns).max(0) as u64;
        self.seq = 0;
        let nbirth = Payload {
            timestamp: Some(ts),
            seq: Some(self.next_seq()),
            metrics: vec![
                Metric {
                    name: Some(sparkplug::BD_SEQ.into()),
                    timestamp: Some(ts),
                    datatype: Some(datatype::INT64),
                    value: Some(metric::Value::LongValue(bd_seq)),
                    ..Default::default()
                },
                Metric {
                    name: Some(sparkplug::REBIRTH.into()),
                    timestamp: Some(ts),
                    datatype: Some(datatype::BOOLEAN),
                    value: Some(metric::Value::BooleanValue(false)),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let topic = self.nbirth_topic.clone();
        if !self.publish(client, &topic, QoS::AtMostOnce, nbirth.encode_to_vec()).await {
            return false;
        }
        for d in 0..self.devices.len() {
            let device = &self.devices[d];
            let metrics = device
                .metrics
                .iter()
                .map(|m| {
                    let (dt, value) = sparkplug_value(m.ty, frame.values[m.tag]);
                    Metric {
                        name: Some(m.name.into()),
                        alias: Some(m.alias),
                        timestamp: Some(ns_to_ms(frame.stamps[m.tag]).max(0) as u64),
                        datatype: Some(dt),
                        value: Some(value),
                        ..Default::default()
                    }
                })
                .collect();
            let topic = device.birth_topic.clone();
            let tags: Vec<usize> = device.metrics.iter().map(|m| m.tag).collect();
            let payload = Payload { timestamp: Some(ts), seq: Some(self.next_seq()), metrics, ..Default::default() };
            if !self.publish(client, &topic, QoS::AtMostOnce, payload.encode_to_vec()).await {
                return false;
            }
            for i in tags {
                self.last[i] = frame.stamps[i];
            }
        }
        if fresh {
            for t in &self.json {
                for &i in &t.tags {
                    self.last[i] = frame.stamps[i];
                }
            }
        }
        true
    }

    /// JSON objects of the sensors that sampled and DDATA of the metrics that
    /// changed since the last publish.
    async fn publish_changes(&mut self, client: &AsyncClient, frame: &Frame) -> bool {
        let catalog = self.feed.catalog.clone();
        for t in 0..self.json.len() {
            let topic = &self.json[t];
            if topic.tags.iter().all(|&i| frame.stamps[i] == self.last[i]) {
                continue;
            }
            let payload = json_payload(&catalog, &topic.tags, frame);
            for &i in &topic.tags {
                self.last[i] = frame.stamps[i];
            }
            let name = topic.topic.clone();
            if !self.publish(client, &name, QoS::AtMostOnce, payload.into_bytes()).await {
                return false;
            }
        }
        let ts = ns_to_ms(frame.ts_ns).max(0) as u64;
        for d in 0..self.devices.len() {
            let device = &self.devices[d];
            let changed: Vec<&DeviceMetric> =
                device.metrics.iter().filter(|m| frame.stamps[m.tag] != self.last[m.tag]).collect();
            if changed.is_empty() {
                continue;
            }
            let metrics = changed
                .iter()
                .map(|m| Metric {
                    alias: Some(m.alias),
                    timestamp: Some(ns_to_ms(frame.stamps[m.tag]).max(0) as u64),
                    value: Some(sparkplug_value(m.ty, frame.values[m.tag]).1),
                    ..Default::default()
                })
                .collect();
            let tags: Vec<usize> = changed.iter().map(|m| m.tag).collect();
            let topic = device.data_topic.clone();
            let payload = Payload { timestamp: Some(ts), seq: Some(self.next_seq()), metrics, ..Default::default() };
            if !self.publish(client, &topic, QoS::AtMostOnce, payload.encode_to_vec()).await {
                return false;
            }
            for i in tags {
                self.last[i] = frame.stamps[i];
            }
        }
        true
    }

    /// Going offline on purpose: NDEATH, then a clean DISCONNECT.
    async fn goodbye(&mut self, client: &AsyncClient, rx: &mut mpsc::Receiver<ConnEvent>, bd_seq: u64) {
        let ts = ns_to_ms(self.feed.frames.borrow().ts_ns).max(0) as u64;
        let topic = self.ndeath_topic.clone();
        if !self.publish(client, &topic, QoS::AtLeastOnce, Self::death_payload(bd_seq, ts)).await {
            return;
        }
        if client.disconnect().await.is_err() {
            return;
        }
        let flushed = async {
            while let Some(ev) = rx.recv().await {
                if matches!(ev, ConnEvent::Disconnected) {
                    break;
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), flushed).await.is_err() {
            warn!("MQTT disconnect not flushed in time");
        }
        info!(bd_seq, "MQTT disconnected after NDEATH");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(parse_broker_url("mqtt://127.0.0.1:1884").ok(), Some(("127.0.0.1".into(), 1884)));
        assert_eq!(parse_broker_url("tcp://broker/").ok(), Some(("broker".into(), 1883)));
        assert_eq!(parse_broker_url("mqtt://[::1]:2000").ok(), Some(("::1".into(), 2000)));
        for bad in ["127.0.0.1:1883", "mqtts://x:1", "mqtt://", "mqtt://x:port", "mqtt://u@x:1", "mqtt://x:1/a"] {
            assert!(parse_broker_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_object() {
        let (catalog, index) = Catalog::build();
        let topics = catalog.json_topics();
        let (topic, tags) = &topics[0];
        assert_eq!(topic, "plant/line1/depalletizer/vib_de");
        let mut values = vec![Val::F64(0.0); catalog.len()];
        let mut stamps = vec![0; catalog.len()];
        let m = &index.machines[0];
        values[m.vib_rms[0]] = Val::F64(1.25);
        values[m.vib_peak[0]] = Val::F64(0.5);
        values[m.bearing_temp[0]] = Val::F64(41.0);
        stamps[m.vib_rms[0]] = 1_704_067_210_000_000_000;
        let frame = Frame { ts_ns: 1_704_067_210_000_000_000, values, stamps, down: Default::default() };
        let json = json_payload(&catalog, tags, &frame);
        assert_eq!(
            json,
            r#"{"ts":"2024-01-01T00:00:10.000Z","ts_ms":1704067210000,"rms":1.25,"peak":0.5,"temp":41.0}"#
        );
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["temp"].as_f64(), Some(41.0));
    }
}
