//! OPC UA values, timestamps and status codes to samples.

use opcua::types::{ByteString, DataValue, DateTime, Guid, NodeId, Variant};

use crate::config::{NodeIdentifier, OpcUaNodeId};
use crate::domain::{Quality, Timestamp, Value};

/// OPC UA ticks (100 ns since 1601-01-01) at the Unix epoch.
const UNIX_EPOCH_TICKS: i64 = 11_644_473_600 * 10_000_000;

/// The crate's NodeId of a configured address.
pub fn node_id(id: &OpcUaNodeId) -> NodeId {
    match &id.identifier {
        NodeIdentifier::Numeric(n) => NodeId::new(id.namespace, *n),
        NodeIdentifier::String(s) => NodeId::new(id.namespace, s.clone()),
        NodeIdentifier::Guid(g) => NodeId::new(id.namespace, Guid::from_bytes(*g)),
        NodeIdentifier::Opaque(b) => NodeId::new(id.namespace, ByteString::from(b.clone())),
    }
}

/// ns since the Unix epoch of an OPC UA time; None for the null time.
pub fn timestamp(t: &DateTime) -> Option<Timestamp> {
    if t.is_null() {
        return None;
    }
    t.ticks().checked_sub(UNIX_EPOCH_TICKS)?.checked_mul(100)
}

/// The time of a data value: SourceTimestamp, else ServerTimestamp, else `now`.
pub fn sample_time(dv: &DataValue, now: Timestamp) -> Timestamp {
    dv.source_timestamp
        .as_ref()
        .and_then(timestamp)
        .or_else(|| dv.server_timestamp.as_ref().and_then(timestamp))
        .unwrap_or(now)
}

/// The quality of a data value: its status code as is (Good when absent).
pub fn quality(dv: &DataValue) -> Quality {
    Quality::from_status(dv.status.map(|s| s.bits()).unwrap_or(0))
}

/// A variant as a sample value; None for types a tag cannot hold (arrays,
/// structures, byte strings ...).
pub fn value(v: &Variant) -> Option<Value> {
    Some(match v {
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::I64(*x as i64),
        Variant::Byte(x) => Value::I64(*x as i64),
        Variant::Int16(x) => Value::I64(*x as i64),
        Variant::UInt16(x) => Value::I64(*x as i64),
        Variant::Int32(x) => Value::I64(*x as i64),
        Variant::UInt32(x) => Value::I64(*x as i64),
        Variant::Int64(x) => Value::I64(*x),
        Variant::UInt64(x) => Value::I64(i64::try_from(*x).ok()?),
        Variant::Float(x) => Value::F64(crate::ingest::plc_real(*x)),
        Variant::Double(x) => Value::F64(*x),
        Variant::String(s) => Value::Str(s.as_ref().to_string()),
        Variant::LocalizedText(t) => Value::Str(t.text.as_ref().to_string()),
        Variant::DateTime(t) => Value::I64(timestamp(t)?),
        Variant::StatusCode(s) => Value::I64(s.bits() as i64),
        Variant::Variant(inner) => return value(inner),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::StatusCode;

    #[test]
    fn times() {
        let ns = 1_704_067_200_123_456_700i64;
        let t = DateTime::from(ns / 100 + UNIX_EPOCH_TICKS);
        assert_eq!(timestamp(&t), Some(ns));
        assert_eq!(timestamp(&DateTime::null()), None);
        let mut dv = DataValue { server_timestamp: Some(t), ..Default::default() };
        assert_eq!(sample_time(&dv, 7), ns);
        dv.server_timestamp = None;
        assert_eq!(sample_time(&dv, 7), 7);
        dv.source_timestamp = Some(DateTime::from(UNIX_EPOCH_TICKS + 10));
        dv.server_timestamp = Some(t);
        assert_eq!(sample_time(&dv, 7), 1_000);
    }

    #[test]
    fn values() {
        assert_eq!(value(&Variant::Boolean(true)), Some(Value::Bool(true)));
        assert_eq!(value(&Variant::UInt16(60_000)), Some(Value::I64(60_000)));
        assert_eq!(value(&Variant::Int32(-5)), Some(Value::I64(-5)));
        assert_eq!(value(&Variant::Float(21.7)), Some(Value::F64(21.7)));
        assert_eq!(value(&Variant::Double(0.1)), Some(Value::F64(0.1)));
        assert_eq!(value(&Variant::from("running")), Some(Value::Str("running".into())));
        assert_eq!(value(&Variant::UInt64(u64::MAX)), None);
        assert_eq!(value(&Variant::Empty), None);
        assert_eq!(value(&Variant::ByteString(ByteString::from(vec![1u8]))), None);
    }

    #[test]
    fn qualities() {
        let mut dv = DataValue::default();
        assert!(quality(&dv).is_good());
        dv.status = Some(StatusCode::BadNodeIdUnknown);
        assert_eq!(quality(&dv).code(), StatusCode::BadNodeIdUnknown.bits());
        assert!(!quality(&dv).is_good());
    }

    #[test]
    fn node_ids() {
        let id: OpcUaNodeId = "ns=2;s=Line1/Filler/BowlPressure".parse().unwrap();
        assert_eq!(node_id(&id), NodeId::new(2, "Line1/Filler/BowlPressure"));
        let id: OpcUaNodeId = "i=2258".parse().unwrap();
        assert_eq!(node_id(&id), NodeId::new(0, 2258u32));
    }
}
