//! Sparkplug B payloads (Eclipse Sparkplug specification v3.0), written by
//! hand with `prost` derives instead of generated from a `.proto` file.
//!
//! Field numbers, types and names follow the specification's protobuf schema
//! (`sparkplug_b.proto`, package `org.eclipse.tahu.protobuf`, proto2 syntax,
//! as shipped by Eclipse Tahu, which is what real decoders are built from):
//!
//! ```text
//! Payload { optional uint64 timestamp = 1; repeated Metric metrics = 2; optional uint64 seq = 3;
//!           optional string uuid = 4; optional bytes body = 5; extensions 6 to max; }
//! Metric  { optional string name = 1; optional uint64 alias = 2; optional uint64 timestamp = 3;
//!           optional uint32 datatype = 4; optional bool is_historical = 5; optional bool is_transient = 6;
//!           optional bool is_null = 7; optional MetaData metadata = 8; optional PropertySet properties = 9;
//!           oneof value { uint32 int_value = 10; uint64 long_value = 11; float float_value = 12;
//!                         double double_value = 13; bool boolean_value = 14; string string_value = 15;
//!                         bytes bytes_value = 16; DataSet dataset_value = 17; Template template_value = 18;
//!                         MetricValueExtension extension_value = 19; } }
//! ```
//!
//! Only what an edge node of scalar metrics needs is modelled: `metadata`,
//! `properties` and the DataSet/Template/extension values are left out, and
//! prost skips them as unknown fields when decoding. The same schema, as a
//! `.proto` file, is `tests/interop/sparkplug_b.proto`, from which the Python
//! interop test builds its decoder.

/// Sparkplug B namespace: the first topic level.
pub const NAMESPACE: &str = "spBv1.0";

/// Metric datatypes (the `datatype` field; the comment block of the spec's `Payload`).
pub mod datatype {
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const UINT8: u32 = 5;
    pub const UINT16: u32 = 6;
    pub const UINT32: u32 = 7;
    pub const UINT64: u32 = 8;
    pub const FLOAT: u32 = 9;
    pub const DOUBLE: u32 = 10;
    pub const BOOLEAN: u32 = 11;
    pub const STRING: u32 = 12;
    pub const DATETIME: u32 = 13;
    pub const TEXT: u32 = 14;
}

/// Name of the edge node's birth/death sequence metric.
pub const BD_SEQ: &str = "bdSeq";
/// Name of the node metric a host writes `true` to (in an NCMD) to ask for births again.
pub const REBIRTH: &str = "Node Control/Rebirth";

/// `org.eclipse.tahu.protobuf.Payload`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// Milliseconds since the Unix epoch (UTC) when the message was made.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// 0..=255; absent in NDEATH.
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// `org.eclipse.tahu.protobuf.Payload.Metric` (without metadata, properties and
/// the DataSet/Template/extension values).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Only in births (and commands); data messages carry the alias alone.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// Milliseconds since the Unix epoch (UTC) when the value was acquired.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// One of [`datatype`]; required in births, left out of data messages.
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    #[prost(oneof = "metric::Value", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<metric::Value>,
}

pub mod metric {
    /// The `value` oneof of a metric. Int8..UInt32 travel in `IntValue`
    /// (signed ones as two's complement), Int64/UInt64/DateTime in `LongValue`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(uint32, tag = "10")]
        IntValue(u32),
        #[prost(uint64, tag = "11")]
        LongValue(u64),
        #[prost(float, tag = "12")]
        FloatValue(f32),
        #[prost(double, tag = "13")]
        DoubleValue(f64),
        #[prost(bool, tag = "14")]
        BooleanValue(bool),
        #[prost(string, tag = "15")]
        StringValue(String),
        #[prost(bytes = "vec", tag = "16")]
        BytesValue(Vec<u8>),
    }
}

/// The kinds of Sparkplug B message an edge node publishes or receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    NBirth,
    NDeath,
    DBirth,
    DDeath,
    NData,
    DData,
    NCmd,
    DCmd,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NDeath => "NDEATH",
            MessageType::DBirth => "DBIRTH",
            MessageType::DDeath => "DDEATH",
            MessageType::NData => "NDATA",
            MessageType::DData => "DDATA",
            MessageType::NCmd => "NCMD",
            MessageType::DCmd => "DCMD",
        }
    }
}

/// `spBv1.0/<group>/<type>/<node>[/<device>]`.
pub fn topic(group: &str, ty: MessageType, node: &str, device: Option<&str>) -> String {
    match device {
        Some(d) => format!("{NAMESPACE}/{group}/{}/{node}/{d}", ty.as_str()),
        None => format!("{NAMESPACE}/{group}/{}/{node}", ty.as_str()),
    }
}

impl Payload {
    /// True when this (NCMD) payload writes `true` to `Node Control/Rebirth`.
    /// The metric is matched by name: the node's birth gives it no alias.
    pub fn requests_rebirth(&self) -> bool {
        self.metrics
            .iter()
            .any(|m| m.name.as_deref() == Some(REBIRTH) && m.value == Some(metric::Value::BooleanValue(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn sample() -> Payload {
        Payload {
            timestamp: Some(1_704_067_200_123),
            seq: Some(255),
            metrics: vec![
                Metric {
                    name: Some(BD_SEQ.into()),
                    datatype: Some(datatype::INT64),
                    value: Some(metric::Value::LongValue(7)),
                    ..Default::default()
                },
                Metric {
                    name: Some("Power".into()),
                    alias: Some(3),
                    timestamp: Some(1_704_067_200_000),
                    datatype: Some(datatype::DOUBLE),
                    value: Some(metric::Value::DoubleValue(12.345)),
                    ..Default::default()
                },
                Metric { alias: Some(4), value: Some(metric::Value::BooleanValue(false)), ..Default::default() },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let p = sample();
        let bytes = p.encode_to_vec();
        let back = Payload::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(back, p);
    }

    #[test]
    fn wire_format_uses_the_spec_field_numbers() {
        // Payload{timestamp = 1 (varint), seq = 3 (varint)}: keys 0x08 and 0x18.
        let p = Payload { timestamp: Some(1), seq: Some(2), ..Default::default() };
        assert_eq!(p.encode_to_vec(), vec![0x08, 1, 0x18, 2]);
        // Metric{alias = 2, datatype = 4, double_value = 13 (64-bit)}: keys 0x10, 0x20, 0x69.
        let m = Metric {
            alias: Some(5),
            datatype: Some(datatype::DOUBLE),
            value: Some(metric::Value::DoubleValue(1.0)),
            ..Default::default()
        };
        let mut want = vec![0x10, 5, 0x20, 10, 0x69];
        want.extend_from_slice(&1.0f64.to_le_bytes());
        assert_eq!(m.encode_to_vec(), want);
        // Metric{name = 1 (length-delimited), boolean_value = 14}: keys 0x0a, 0x70.
        let m = Metric { name: Some("a".into()), value: Some(metric::Value::BooleanValue(true)), ..Default::default() };
        assert_eq!(m.encode_to_vec(), vec![0x0a, 1, b'a', 0x70, 1]);
    }

    #[test]
    fn rebirth_request() {
        let mut p = Payload {
            metrics: vec![Metric {
                name: Some(REBIRTH.into()),
                datatype: Some(datatype::BOOLEAN),
                value: Some(metric::Value::BooleanValue(true)),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(p.requests_rebirth());
        p.metrics[0].value = Some(metric::Value::BooleanValue(false));
        assert!(!p.requests_rebirth());
        assert_eq!(topic("line1", MessageType::NCmd, "energy", None), "spBv1.0/line1/NCMD/energy");
        assert_eq!(topic("line1", MessageType::DData, "energy", Some("filler")), "spBv1.0/line1/DDATA/energy/filler");
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // A metric with a DataSet value (field 17) and properties (field 9) still decodes.
        let mut bytes = Metric { alias: Some(1), ..Default::default() }.encode_to_vec();
        bytes.extend_from_slice(&[0x4a, 0x00, 0x8a, 0x01, 0x00]);
        let m = Metric::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(m.alias, Some(1));
        assert_eq!(m.value, None);
    }
}
