//! Sparkplug B (v3.0) for a host application that only reads: the payload
//! protobuf (the subset of Eclipse Tahu's `sparkplug_b.proto` a reader needs;
//! datasets, templates, metadata and properties are skipped as unknown
//! fields), topic parsing, and the per-node session state — aliases learnt
//! from NBIRTH/DBIRTH, rebirth requests on an unknown alias, NDEATH (checked
//! against the birth's `bdSeq`) and DDEATH turning the tags bad.

use std::collections::HashMap;

use prost::Message as _;

use crate::domain::{Quality, Timestamp, Value};

/// `Payload` of `sparkplug_b.proto` (proto2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// Milliseconds since the epoch at which the message was made.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// Sequence number 0..=255 across the node's messages.
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    /// UUID of the body's format.
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    /// Opaque body.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// `Payload.Metric` (the fields a reader needs).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Name (in births, and in data messages that do not use aliases).
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Alias given in the birth certificate.
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// Milliseconds since the epoch at which the value was sampled.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// Data type (see [`datatype`]); in births, often left out of data messages.
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    /// A historical value (not the current one).
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    /// A transient value (not to be stored).
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    /// The value is null.
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// The value.
    #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<MetricValue>,
}

/// `Payload.Metric.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MetricValue {
    /// Int8/16/32 (two's complement in the low bits) and UInt8/16/32.
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    /// Int64 (two's complement), UInt64, DateTime (ms).
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    /// Float.
    #[prost(float, tag = "12")]
    FloatValue(f32),
    /// Double.
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    /// Boolean.
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    /// String, Text, UUID.
    #[prost(string, tag = "15")]
    StringValue(String),
    /// Bytes, File.
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
}

/// Sparkplug B data types (`DataType` of `sparkplug_b.proto`).
pub mod datatype {
    /// Int8.
    pub const INT8: u32 = 1;
    /// Int16.
    pub const INT16: u32 = 2;
    /// Int32.
    pub const INT32: u32 = 3;
    /// Int64.
    pub const INT64: u32 = 4;
    /// UInt8.
    pub const UINT8: u32 = 5;
    /// UInt16.
    pub const UINT16: u32 = 6;
    /// UInt32.
    pub const UINT32: u32 = 7;
    /// UInt64.
    pub const UINT64: u32 = 8;
    /// Float.
    pub const FLOAT: u32 = 9;
    /// Double.
    pub const DOUBLE: u32 = 10;
    /// Boolean.
    pub const BOOLEAN: u32 = 11;
    /// String.
    pub const STRING: u32 = 12;
    /// DateTime (ms since the epoch).
    pub const DATETIME: u32 = 13;
    /// Text.
    pub const TEXT: u32 = 14;
}

/// The Sparkplug B namespace (first topic level) of version 3.0.
pub const SPARKPLUG_NAMESPACE: &str = "spBv1.0";
/// The node metric that carries the session number in NBIRTH and NDEATH.
pub const BD_SEQ: &str = "bdSeq";
/// The node control metric a host writes `true` to in an NCMD to ask for births.
pub const REBIRTH: &str = "Node Control/Rebirth";

/// Sparkplug message types (the third topic level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgType {
    /// Node birth.
    NBirth,
    /// Node death.
    NDeath,
    /// Node data.
    NData,
    /// Node command.
    NCmd,
    /// Device birth.
    DBirth,
    /// Device death.
    DDeath,
    /// Device data.
    DData,
    /// Device command.
    DCmd,
}

/// A parsed Sparkplug B topic `spBv1.0/<group>/<type>/<node>[/<device>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpTopic<'t> {
    /// Group id.
    pub group: &'t str,
    /// Message type.
    pub kind: MsgType,
    /// Edge node id.
    pub node: &'t str,
    /// Device id (device messages).
    pub device: Option<&'t str>,
}

impl<'t> SpTopic<'t> {
    /// Parses a topic; `None` when it is not a Sparkplug B node or device message.
    pub fn parse(topic: &'t str) -> Option<SpTopic<'t>> {
        let mut it = topic.split('/');
        if it.next()? != SPARKPLUG_NAMESPACE {
            return None;
        }
        let group = it.next()?;
        let kind = match it.next()? {
            "NBIRTH" => MsgType::NBirth,
            "NDEATH" => MsgType::NDeath,
            "NDATA" => MsgType::NData,
            "NCMD" => MsgType::NCmd,
            "DBIRTH" => MsgType::DBirth,
            "DDEATH" => MsgType::DDeath,
            "DDATA" => MsgType::DData,
            "DCMD" => MsgType::DCmd,
            _ => return None,
        };
        let node = it.next()?;
        let device = it.next();
        if it.next().is_some()
            || device.is_some() != matches!(kind, MsgType::DBirth | MsgType::DDeath | MsgType::DData | MsgType::DCmd)
        {
            return None;
        }
        Some(SpTopic { group, kind, node, device })
    }
}

/// Where a configured tag sits in the Sparkplug namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MetricKey {
    group: String,
    node: String,
    device: Option<String>,
    metric: String,
}

/// A tag's sample, by the tag's index in the source's tag list.
#[derive(Clone, Debug, PartialEq)]
pub struct TagSample {
    /// Index of the tag.
    pub tag: usize,
    /// Timestamp (ns).
    pub ts: Timestamp,
    /// Value (`None` for a bad sample).
    pub value: Option<Value>,
    /// Quality.
    pub quality: Quality,
}

/// What one Sparkplug message leads to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Samples for configured tags.
    pub samples: Vec<TagSample>,
    /// An NCMD rebirth request to publish: (topic, payload).
    pub rebirth: Option<(String, Vec<u8>)>,
    /// The payload could not be used (undecodable, metric without name or alias ...).
    pub malformed: Option<String>,
}

#[derive(Default)]
struct NodeState {
    /// `bdSeq` of the current session (from NBIRTH).
    bd_seq: Option<u64>,
    /// A rebirth was requested and no NBIRTH came since.
    rebirth_requested: bool,
    /// Per device (`None`: the node itself): alias → (name, datatype), name → datatype.
    devices: HashMap<Option<String>, Aliases>,
}

#[derive(Default)]
struct Aliases {
    by_alias: HashMap<u64, (String, Option<u32>)>,
    types: HashMap<String, u32>,
}

/// The Sparkplug state of one MQTT source.
pub struct Sparkplug {
    /// (key, tag index) for every Sparkplug tag.
    tags: Vec<(MetricKey, usize)>,
    by_metric: HashMap<MetricKey, Vec<usize>>,
    nodes: HashMap<(String, String), NodeState>,
}

impl Sparkplug {
    /// `tags`: (tag index, topic filter `spBv1.0/<group>/+/<node>[/<device>]`, metric name).
    pub fn new<'a>(tags: impl IntoIterator<Item = (usize, &'a str, &'a str)>) -> Sparkplug {
        let mut list = Vec::new();
        let mut by_metric: HashMap<MetricKey, Vec<usize>> = HashMap::new();
        for (i, filter, metric) in tags {
            let levels: Vec<&str> = filter.split('/').collect();
            if levels.len() < 4 {
                continue; // checked at config load
            }
            let key = MetricKey {
                group: levels[1].to_string(),
                node: levels[3].to_string(),
                device: levels.get(4).map(|d| d.to_string()),
                metric: metric.to_string(),
            };
            by_metric.entry(key.clone()).or_default().push(i);
            list.push((key, i));
        }
        Sparkplug { tags: list, by_metric, nodes: HashMap::new() }
    }

    /// Whether any tag is a Sparkplug metric.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Forgets every session (after the gateway's own reconnect: messages may have been missed).
    pub fn reset(&mut self) {
        self.nodes.clear();
    }

    /// Handles one message on a Sparkplug topic received at `recv` (ns).
    pub fn handle(&mut self, topic: &SpTopic<'_>, payload: &[u8], recv: Timestamp) -> Outcome {
        let mut out = Outcome::default();
        if matches!(topic.kind, MsgType::NCmd | MsgType::DCmd) {
            return out; // commands are for the edge node (our own rebirth requests come back here)
        }
        let p = match Payload::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                out.malformed = Some(format!("undecodable Sparkplug B payload: {e}"));
                return out;
            }
        };
        let msg_ts = p.timestamp.and_then(ms_to_ns).unwrap_or(recv);
        let node_key = (topic.group.to_string(), topic.node.to_string());
        let device = topic.device.map(str::to_string);
        match topic.kind {
            MsgType::NBirth | MsgType::DBirth => {
                let node = self.nodes.entry(node_key).or_default();
                if topic.kind == MsgType::NBirth {
                    // A new session: every alias of the node and its devices is void.
                    node.devices.clear();
                    node.rebirth_requested = false;
                    node.bd_seq = p.metrics.iter().find(|m| m.name.as_deref() == Some(BD_SEQ)).and_then(int_of);
                }
                let aliases = node.devices.entry(device.clone()).or_default();
                *aliases = Aliases::default();
                for m in &p.metrics {
                    let Some(name) = &m.name else {
                        out.malformed = Some("birth metric without a name".into());
                        continue;
                    };
                    if let Some(dt) = m.datatype {
                        aliases.types.insert(name.clone(), dt);
                    }
                    if let Some(a) = m.alias {
                        aliases.by_alias.insert(a, (name.clone(), m.datatype));
                    }
                }
                self.samples(topic, device, &p, msg_ts, &mut out);
            }
            MsgType::NData | MsgType::DData => {
                let known = self.nodes.get(&node_key).is_some_and(|n| n.devices.contains_key(&device));
                if !known {
                    self.request_rebirth(topic, recv, &mut out);
                    return out;
                }
                self.samples(topic, device, &p, msg_ts, &mut out);
            }
            MsgType::NDeath => {
                let birth = self.nodes.get(&node_key).and_then(|n| n.bd_seq);
                let death = p.metrics.iter().find(|m| m.name.as_deref() == Some(BD_SEQ)).and_then(int_of);
                if let (Some(b), Some(d)) = (birth, death) {
                    if b != d {
                        // The will of an older session: the current one is alive.
                        return out;
                    }
                }
                self.nodes.remove(&node_key);
                let ts = recv.max(msg_ts);
                for (k, i) in &self.tags {
                    if k.group == topic.group && k.node == topic.node {
                        out.samples.push(TagSample { tag: *i, ts, value: None, quality: Quality::BAD_COMMS });
                    }
                }
            }
            MsgType::DDeath => {
                if let Some(n) = self.nodes.get_mut(&node_key) {
                    n.devices.remove(&device);
                }
                for (k, i) in &self.tags {
                    if k.group == topic.group && k.node == topic.node && k.device == device {
                        out.samples.push(TagSample { tag: *i, ts: msg_ts, value: None, quality: Quality::BAD_COMMS });
                    }
                }
            }
            MsgType::NCmd | MsgType::DCmd => {}
        }
        out
    }

    /// Samples of the configured metrics in a birth or data message.
    fn samples(
        &mut self,
        topic: &SpTopic<'_>,
        device: Option<String>,
        p: &Payload,
        msg_ts: Timestamp,
        out: &mut Outcome,
    ) {
        let mut key = MetricKey {
            group: topic.group.to_string(),
            node: topic.node.to_string(),
            device: device.clone(),
            metric: String::new(),
        };
        let mut unknown_alias = false;
        for m in &p.metrics {
            let aliases = self.nodes.get(&(key.group.clone(), key.node.clone())).and_then(|n| n.devices.get(&device));
            let (name, dt) = match (&m.name, m.alias) {
                (Some(n), _) => (n.clone(), m.datatype.or_else(|| aliases.and_then(|a| a.types.get(n).copied()))),
                (None, Some(a)) => match aliases.and_then(|x| x.by_alias.get(&a)) {
                    Some((n, dt)) => (n.clone(), m.datatype.or(*dt)),
                    None => {
                        unknown_alias = true;
                        continue;
                    }
                },
                (None, None) => {
                    out.malformed = Some("metric with neither name nor alias".into());
                    continue;
                }
            };
            if m.is_historical == Some(true) && m.timestamp.is_none() {
                continue; // a historical value without its time cannot be placed
            }
            key.metric = name;
            let Some(tags) = self.by_metric.get(&key) else { continue };
            let ts = m.timestamp.and_then(ms_to_ns).unwrap_or(msg_ts);
            let (value, quality) = if m.is_null == Some(true) {
                (None, Quality::BAD)
            } else {
                match metric_value(m, dt) {
                    Some(v) => (Some(v), Quality::GOOD),
                    None => {
                        out.malformed = Some(format!("metric `{}` has no usable value", key.metric));
                        (None, Quality::BAD_DECODING)
                    }
                }
            };
            for &tag in tags {
                out.samples.push(TagSample { tag, ts, value: value.clone(), quality });
            }
        }
        if unknown_alias {
            let now = msg_ts;
            self.request_rebirth(topic, now, out);
        }
    }

    /// Publishes (once until the next NBIRTH) an NCMD asking the node for its births.
    fn request_rebirth(&mut self, topic: &SpTopic<'_>, now: Timestamp, out: &mut Outcome) {
        let node = self.nodes.entry((topic.group.to_string(), topic.node.to_string())).or_default();
        if node.rebirth_requested {
            return;
        }
        node.rebirth_requested = true;
        out.rebirth = Some((
            format!("{SPARKPLUG_NAMESPACE}/{}/NCMD/{}", topic.group, topic.node),
            rebirth_request(now).encode_to_vec(),
        ));
    }

    /// Clears the "rebirth requested" marks (a request may have been lost with the connection).
    pub fn allow_rebirth_requests(&mut self) {
        for n in self.nodes.values_mut() {
            n.rebirth_requested = false;
        }
    }
}

/// The NCMD payload writing `Node Control/Rebirth = true`.
pub fn rebirth_request(now: Timestamp) -> Payload {
    let ms = u64::try_from(now.div_euclid(1_000_000)).unwrap_or(0);
    Payload {
        timestamp: Some(ms),
        metrics: vec![Metric {
            name: Some(REBIRTH.to_string()),
            timestamp: Some(ms),
            datatype: Some(datatype::BOOLEAN),
            value: Some(MetricValue::BooleanValue(true)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn ms_to_ns(ms: u64) -> Option<Timestamp> {
    i64::try_from(ms).ok()?.checked_mul(1_000_000)
}

/// An integer metric (bdSeq).
fn int_of(m: &Metric) -> Option<u64> {
    match m.value {
        Some(MetricValue::LongValue(v)) => Some(v),
        Some(MetricValue::IntValue(v)) => Some(u64::from(v)),
        _ => None,
    }
}

/// A metric's value by its data type (from the metric or its birth); by the
/// protobuf field when the type is unknown.
pub fn metric_value(m: &Metric, datatype: Option<u32>) -> Option<Value> {
    use self::datatype as dt;
    let v = m.value.as_ref()?;
    Some(match (v, datatype) {
        (MetricValue::IntValue(x), Some(dt::INT8)) => Value::I64(i64::from(*x as u8 as i8)),
        (MetricValue::IntValue(x), Some(dt::INT16)) => Value::I64(i64::from(*x as u16 as i16)),
        (MetricValue::IntValue(x), Some(dt::INT32)) => Value::I64(i64::from(*x as i32)),
        (MetricValue::IntValue(x), _) => Value::I64(i64::from(*x)),
        (MetricValue::LongValue(x), Some(dt::UINT64)) => match i64::try_from(*x) {
            Ok(i) => Value::I64(i),
            Err(_) => Value::F64(*x as f64),
        },
        (MetricValue::LongValue(x), _) => Value::I64(*x as i64),
        (MetricValue::FloatValue(x), _) => Value::F64(f64::from(*x)),
        (MetricValue::DoubleValue(x), _) => Value::F64(*x),
        (MetricValue::BooleanValue(b), _) => Value::Bool(*b),
        (MetricValue::StringValue(s), _) => Value::Str(s.clone()),
        (MetricValue::BytesValue(_), _) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_704_067_200_000;

    fn metric(name: Option<&str>, alias: Option<u64>, dt: Option<u32>, v: MetricValue) -> Metric {
        Metric { name: name.map(Into::into), alias, datatype: dt, value: Some(v), ..Default::default() }
    }

    fn payload(ts: u64, metrics: Vec<Metric>) -> Vec<u8> {
        Payload { timestamp: Some(ts), seq: Some(0), metrics, ..Default::default() }.encode_to_vec()
    }

    fn state() -> Sparkplug {
        Sparkplug::new([
            (0, "spBv1.0/line1/+/energy/filler", "Power"),
            (1, "spBv1.0/line1/+/energy/filler", "Energy"),
            (2, "spBv1.0/line1/+/energy/capper", "Power"),
            (3, "spBv1.0/line1/+/energy", "Temp"),
        ])
    }

    fn topic(t: &str) -> SpTopic<'_> {
        SpTopic::parse(t).expect("sparkplug topic")
    }

    fn births(sp: &mut Sparkplug, bd: u64) -> Vec<TagSample> {
        let nb = payload(
            T0,
            vec![
                metric(Some(BD_SEQ), None, Some(datatype::INT64), MetricValue::LongValue(bd)),
                metric(Some(REBIRTH), None, Some(datatype::BOOLEAN), MetricValue::BooleanValue(false)),
                metric(Some("Temp"), Some(9), Some(datatype::INT16), MetricValue::IntValue(0xFFFF_FFFE)),
            ],
        );
        let mut s = sp.handle(&topic("spBv1.0/line1/NBIRTH/energy"), &nb, 1).samples;
        let db = payload(
            T0,
            vec![
                metric(Some("Power"), Some(1), Some(datatype::DOUBLE), MetricValue::DoubleValue(12.5)),
                metric(Some("Energy"), Some(2), Some(datatype::FLOAT), MetricValue::FloatValue(100.0)),
            ],
        );
        let out = sp.handle(&topic("spBv1.0/line1/DBIRTH/energy/filler"), &db, 1);
        assert!(out.malformed.is_none() && out.rebirth.is_none());
        s.extend(out.samples);
        s
    }

    #[test]
    fn topics() {
        assert_eq!(
            SpTopic::parse("spBv1.0/g/DDATA/n/d"),
            Some(SpTopic { group: "g", kind: MsgType::DData, node: "n", device: Some("d") })
        );
        assert_eq!(SpTopic::parse("spBv1.0/g/NDEATH/n").map(|t| t.kind), Some(MsgType::NDeath));
        for bad in
            ["spBv1.0/g/DDATA/n", "spBv1.0/g/NDATA/n/d", "spBv1.0/g/XX/n", "plant/a/b/c", "spBv1.0/g/DDATA/n/d/e"]
        {
            assert_eq!(SpTopic::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn births_and_data_by_alias() {
        let mut sp = state();
        let s = births(&mut sp, 3);
        let ns = T0 as i64 * 1_000_000;
        assert_eq!(
            s,
            vec![
                TagSample { tag: 3, ts: ns, value: Some(Value::I64(-2)), quality: Quality::GOOD },
                TagSample { tag: 0, ts: ns, value: Some(Value::F64(12.5)), quality: Quality::GOOD },
                TagSample { tag: 1, ts: ns, value: Some(Value::F64(100.0)), quality: Quality::GOOD },
            ]
        );
        let mut m = metric(None, Some(1), None, MetricValue::DoubleValue(13.0));
        m.timestamp = Some(T0 + 5000);
        let out = sp.handle(&topic("spBv1.0/line1/DDATA/energy/filler"), &payload(T0 + 6000, vec![m]), 1);
        assert_eq!(
            out.samples,
            vec![TagSample { tag: 0, ts: ns + 5_000_000_000, value: Some(Value::F64(13.0)), quality: Quality::GOOD }]
        );
        assert!(out.rebirth.is_none());
        // By name, too.
        let m = metric(Some("Energy"), None, None, MetricValue::FloatValue(101.0));
        let out = sp.handle(&topic("spBv1.0/line1/DDATA/energy/filler"), &payload(T0 + 7000, vec![m]), 1);
        assert_eq!(out.samples[0].value, Some(Value::F64(101.0)));
        assert_eq!(out.samples[0].ts, (T0 as i64 + 7000) * 1_000_000);
    }

    #[test]
    fn unknown_alias_requests_one_rebirth() {
        let mut sp = state();
        let data = payload(T0, vec![metric(None, Some(1), None, MetricValue::DoubleValue(1.0))]);
        let out = sp.handle(&topic("spBv1.0/line1/DDATA/energy/filler"), &data, 5);
        assert!(out.samples.is_empty());
        let (t, p) = out.rebirth.expect("rebirth request");
        assert_eq!(t, "spBv1.0/line1/NCMD/energy");
        let p = Payload::decode(p.as_slice()).expect("decodes");
        assert_eq!(p.metrics[0].name.as_deref(), Some(REBIRTH));
        assert_eq!(p.metrics[0].value, Some(MetricValue::BooleanValue(true)));
        // Only once until the node births.
        assert!(sp.handle(&topic("spBv1.0/line1/DDATA/energy/filler"), &data, 6).rebirth.is_none());
        births(&mut sp, 0);
        let out = sp.handle(&topic("spBv1.0/line1/DDATA/energy/filler"), &data, 7);
        assert_eq!(out.samples.len(), 1);
        // An alias the birth did not give.
        let odd = payload(T0, vec![metric(None, Some(77), None, MetricValue::DoubleValue(1.0))]);
        assert!(sp.handle(&topic("spBv1.0/line1/DDATA/energy/filler"), &odd, 8).rebirth.is_some());
    }

    #[test]
    fn deaths() {
        let mut sp = state();
        births(&mut sp, 4);
        // A stale will (older bdSeq) changes nothing.
        let stale = payload(T0, vec![metric(Some(BD_SEQ), None, Some(datatype::INT64), MetricValue::LongValue(3))]);
        assert!(sp.handle(&topic("spBv1.0/line1/NDEATH/energy"), &stale, 9).samples.is_empty());
        let dd = payload(T0 + 1000, vec![]);
        let out = sp.handle(&topic("spBv1.0/line1/DDEATH/energy/filler"), &dd, 9);
        let tags: Vec<usize> = out.samples.iter().map(|s| s.tag).collect();
        assert_eq!(tags, vec![0, 1]);
        assert!(out.samples.iter().all(|s| s.quality == Quality::BAD_COMMS && s.value.is_none()));
        let death = payload(T0, vec![metric(Some(BD_SEQ), None, Some(datatype::INT64), MetricValue::LongValue(4))]);
        let out = sp.handle(&topic("spBv1.0/line1/NDEATH/energy"), &death, 9);
        let tags: Vec<usize> = out.samples.iter().map(|s| s.tag).collect();
        assert_eq!(tags, vec![0, 1, 2, 3]);
        // After the death, data needs a new birth.
        let data = payload(T0, vec![metric(None, Some(1), None, MetricValue::DoubleValue(1.0))]);
        assert!(sp.handle(&topic("spBv1.0/line1/DDATA/energy/filler"), &data, 10).rebirth.is_some());
    }

    #[test]
    fn malformed_and_values() {
        let mut sp = state();
        assert!(sp.handle(&topic("spBv1.0/line1/DDATA/energy/filler"), b"\xff\xff\xff", 1).malformed.is_some());
        let m = |dt, v| metric_value(&metric(None, None, Some(dt), v), Some(dt));
        assert_eq!(m(datatype::INT8, MetricValue::IntValue(0xFF)), Some(Value::I64(-1)));
        assert_eq!(m(datatype::UINT32, MetricValue::IntValue(0xFFFF_FFFF)), Some(Value::I64(4_294_967_295)));
        assert_eq!(m(datatype::INT64, MetricValue::LongValue(u64::MAX)), Some(Value::I64(-1)));
        assert_eq!(m(datatype::UINT64, MetricValue::LongValue(u64::MAX)), Some(Value::F64(u64::MAX as f64)));
        assert_eq!(m(datatype::BOOLEAN, MetricValue::BooleanValue(true)), Some(Value::Bool(true)));
        assert_eq!(m(datatype::STRING, MetricValue::StringValue("x".into())), Some(Value::Str("x".into())));
        assert_eq!(m(datatype::STRING, MetricValue::BytesValue(vec![1])), None);
    }
}
