//! Where a tag's value comes from inside its source: an OPC UA NodeId, a Modbus
//! register, or an MQTT topic plus JSON paths. Parsed and checked at load time so
//! a typo fails `check-config`, not a 3 a.m. poll.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A tag's address, in the form its source's protocol expects.
#[derive(Clone, Debug, PartialEq)]
pub enum TagAddress {
    /// `ns=2;s=Line1/Filler/BowlPressure` for an `opcua` source.
    OpcUa(OpcUaNodeId),
    /// `{ table = "holding", register = 100, type = "f32" }` for a `modbus` source.
    Modbus(ModbusAddress),
    /// `{ topic = "plant/line1/+/vib", json_path = "$.rms" }` for an `mqtt` source.
    Mqtt(MqttAddress),
}

// ---------------------------------------------------------------------------
// OPC UA

/// An OPC UA NodeId in its standard string form: `[ns=<index>;]<i|s|g|b>=<value>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OpcUaNodeId {
    /// Namespace index (0 when `ns=` is left out).
    pub namespace: u16,
    /// The identifier within the namespace.
    pub identifier: NodeIdentifier,
}

/// The identifier part of an [`OpcUaNodeId`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeIdentifier {
    /// `i=1001`
    Numeric(u32),
    /// `s=Line1/Filler/BowlPressure`
    String(String),
    /// `g=09087e75-8e5e-499b-954f-f2a9603db28a`; bytes in the order written.
    Guid([u8; 16]),
    /// `b=M/RbKBsRVkePCePcx24oRA==` (base64).
    Opaque(Vec<u8>),
}

impl FromStr for OpcUaNodeId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut rest = s;
        let mut namespace = 0u16;
        if rest.starts_with("nsu=") {
            return Err(format!("bad NodeId `{s}`: namespace URIs (`nsu=`) are not supported, use `ns=<index>;`"));
        }
        if let Some(after) = rest.strip_prefix("ns=") {
            let (ns, tail) = after
                .split_once(';')
                .ok_or_else(|| format!("bad NodeId `{s}`: `ns=<index>` must be followed by `;` and an identifier"))?;
            namespace = ns
                .parse()
                .map_err(|_| format!("bad NodeId `{s}`: namespace index `{ns}` is not a number 0..=65535"))?;
            rest = tail;
        }
        let expected = || {
            format!(
                "bad NodeId `{s}`: expected `i=<number>`, `s=<string>`, `g=<guid>` or `b=<base64>`{}",
                if namespace == 0 && !s.starts_with("ns=") { ", optionally after `ns=<index>;`" } else { "" }
            )
        };
        let (kind, value) = rest.split_once('=').ok_or_else(expected)?;
        let identifier = match kind {
            "i" => NodeIdentifier::Numeric(value.parse().map_err(|_| {
                format!("bad NodeId `{s}`: numeric identifier `{value}` is not a number 0..=4294967295")
            })?),
            "s" if value.is_empty() => return Err(format!("bad NodeId `{s}`: string identifier is empty")),
            "s" => NodeIdentifier::String(value.to_string()),
            "g" => NodeIdentifier::Guid(parse_guid(value).ok_or_else(|| {
                format!(
                    "bad NodeId `{s}`: GUID `{value}` is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex)"
                )
            })?),
            "b" => match decode_base64(value) {
                Some(bytes) if !bytes.is_empty() => NodeIdentifier::Opaque(bytes),
                _ => return Err(format!("bad NodeId `{s}`: opaque identifier `{value}` is not non-empty base64")),
            },
            _ => return Err(expected()),
        };
        Ok(OpcUaNodeId { namespace, identifier })
    }
}

impl fmt::Display for OpcUaNodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace != 0 {
            write!(f, "ns={};", self.namespace)?;
        }
        match &self.identifier {
            NodeIdentifier::Numeric(n) => write!(f, "i={n}"),
            NodeIdentifier::String(s) => write!(f, "s={s}"),
            NodeIdentifier::Guid(g) => {
                f.write_str("g=")?;
                for (i, b) in g.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
            NodeIdentifier::Opaque(b) => write!(f, "b={}", encode_base64(b)),
        }
    }
}

fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2)?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 || (s.len() != body.len() && !s.len().is_multiple_of(4)) {
        return None;
    }
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in body.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Modbus

/// One value in a Modbus device, resolved at load time (the unit id falls back
/// to the source's `unit_id`, the type to the table's natural type).
#[derive(Clone, Debug, PartialEq)]
pub struct ModbusAddress {
    /// Unit (slave) id of the device.
    pub unit: u8,
    /// Which of the four Modbus tables the value lives in.
    pub table: ModbusTable,
    /// First register (or coil) number, 0-based as on the wire.
    pub register: u16,
    /// How the registers are decoded.
    pub data_type: ModbusDataType,
    /// Byte and word order of multi-byte values; `ABCD` is big-endian.
    pub order: WordOrder,
    /// For `type = "bool"` on a register table: the bit (0 = least significant).
    pub bit: Option<u8>,
    /// Multiplier applied to the decoded number (`value * scale + offset`).
    pub scale: Option<f64>,
    /// Added to the decoded number after `scale`.
    pub offset: Option<f64>,
    /// For `type = "string"`: length in bytes (two per register).
    pub length: Option<u16>,
}

impl ModbusAddress {
    /// Registers (or coils) one read of this value spans.
    pub fn word_count(&self) -> u32 {
        match self.data_type {
            ModbusDataType::String => u32::from(self.length.unwrap_or(0)).div_ceil(2),
            t => t.fixed_words(),
        }
    }
}

/// The four Modbus data tables.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModbusTable {
    /// Holding registers (function 3), 16-bit read/write.
    Holding,
    /// Input registers (function 4), 16-bit read-only.
    Input,
    /// Coils (function 1), single bits read/write.
    Coil,
    /// Discrete inputs (function 2), single bits read-only.
    Discrete,
}

impl ModbusTable {
    /// True for the single-bit tables (coils, discrete inputs).
    pub fn is_bits(self) -> bool {
        matches!(self, ModbusTable::Coil | ModbusTable::Discrete)
    }
}

/// How registers decode into a value.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModbusDataType {
    /// One register, unsigned.
    U16,
    /// One register, signed.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, signed.
    I32,
    /// Four registers, unsigned.
    U64,
    /// Four registers, signed.
    I64,
    /// Two registers, IEEE 754 single precision.
    F32,
    /// Four registers, IEEE 754 double precision.
    F64,
    /// A coil, a discrete input, or one `bit` of a register.
    Bool,
    /// `length` bytes of text, two per register.
    String,
}

impl ModbusDataType {
    /// Registers taken by the fixed-size types (1 for bool and string).
    fn fixed_words(self) -> u32 {
        match self {
            ModbusDataType::U16 | ModbusDataType::I16 | ModbusDataType::Bool => 1,
            ModbusDataType::U32 | ModbusDataType::I32 | ModbusDataType::F32 => 2,
            ModbusDataType::U64 | ModbusDataType::I64 | ModbusDataType::F64 => 4,
            ModbusDataType::String => 1,
        }
    }

    /// True for the number types (`scale` and `offset` apply).
    pub fn is_number(self) -> bool {
        !matches!(self, ModbusDataType::Bool | ModbusDataType::String)
    }

    /// True for the integer types.
    pub fn is_integer(self) -> bool {
        self.is_number() && !matches!(self, ModbusDataType::F32 | ModbusDataType::F64)
    }

    fn name(self) -> &'static str {
        match self {
            ModbusDataType::U16 => "u16",
            ModbusDataType::I16 => "i16",
            ModbusDataType::U32 => "u32",
            ModbusDataType::I32 => "i32",
            ModbusDataType::U64 => "u64",
            ModbusDataType::I64 => "i64",
            ModbusDataType::F32 => "f32",
            ModbusDataType::F64 => "f64",
            ModbusDataType::Bool => "bool",
            ModbusDataType::String => "string",
        }
    }
}

impl fmt::Display for ModbusDataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Byte order of a multi-register value, naming the bytes of a 32-bit value
/// `A B C D` from most to least significant as they appear on the wire.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum WordOrder {
    /// Big-endian bytes and words (the Modbus default).
    #[default]
    #[serde(rename = "ABCD")]
    Abcd,
    /// Big-endian bytes, little-endian words ("word swap").
    #[serde(rename = "CDAB")]
    Cdab,
    /// Little-endian bytes, big-endian words ("byte swap").
    #[serde(rename = "BADC")]
    Badc,
    /// Little-endian bytes and words.
    #[serde(rename = "DCBA")]
    Dcba,
}

/// The Modbus address as written in the config, before it is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModbusAddressFields {
    /// Unit (slave) id; the source's `unit_id` when left out.
    #[serde(default)]
    unit: Option<i64>,
    /// `holding`, `input`, `coil` or `discrete`.
    table: ModbusTable,
    /// First register or coil, 0..=65535.
    register: i64,
    /// Value type; `bool` for coils and discrete inputs, `u16` for registers by default.
    #[serde(default, rename = "type")]
    data_type: Option<ModbusDataType>,
    /// `ABCD` (default), `CDAB`, `BADC` or `DCBA`.
    #[serde(default)]
    order: Option<WordOrder>,
    /// Bit 0..=15 of a register, for `type = "bool"`.
    #[serde(default)]
    bit: Option<i64>,
    /// Multiplier for number types.
    #[serde(default)]
    scale: Option<f64>,
    /// Offset for number types.
    #[serde(default)]
    offset: Option<f64>,
    /// Bytes, for `type = "string"`.
    #[serde(default)]
    length: Option<i64>,
}

/// Largest number of registers one Modbus read returns.
const MAX_READ_REGISTERS: u32 = 125;

impl ModbusAddressFields {
    /// Checks the address; problems come back as (key within the address, message).
    pub(crate) fn check(self, default_unit: u8) -> Result<ModbusAddress, Vec<(&'static str, String)>> {
        let mut errs: Vec<(&'static str, String)> = Vec::new();
        let unit = match self.unit {
            None => default_unit,
            Some(u) => u8::try_from(u).unwrap_or_else(|_| {
                errs.push(("unit", format!("unit id {u} is out of range 0..=255")));
                default_unit
            }),
        };
        let register = u16::try_from(self.register).unwrap_or_else(|_| {
            errs.push(("register", format!("register {} is out of range 0..=65535", self.register)));
            0
        });
        let table = self.table;
        let data_type = self.data_type.unwrap_or(if table.is_bits() || self.bit.is_some() {
            ModbusDataType::Bool
        } else {
            ModbusDataType::U16
        });
        let table_name = match table {
            ModbusTable::Holding => "holding",
            ModbusTable::Input => "input",
            ModbusTable::Coil => "coil",
            ModbusTable::Discrete => "discrete",
        };
        let mut bit = None;
        if table.is_bits() {
            if data_type != ModbusDataType::Bool {
                errs.push((
                    "type",
                    format!("`{table_name}` table holds single bits: type must be \"bool\", not \"{data_type}\""),
                ));
            }
            for (key, present) in [
                ("bit", self.bit.is_some()),
                ("order", self.order.is_some()),
                ("length", self.length.is_some()),
                ("scale", self.scale.is_some()),
                ("offset", self.offset.is_some()),
            ] {
                if present {
                    errs.push((key, format!("`{key}` does not apply to the `{table_name}` table")));
                }
            }
        } else {
            match (data_type, self.bit) {
                (ModbusDataType::Bool, None) => {
                    errs.push(("bit", format!("type \"bool\" on the `{table_name}` table needs `bit` (0..=15)")))
                }
                (ModbusDataType::Bool, Some(b)) => match u8::try_from(b) {
                    Ok(b) if b <= 15 => bit = Some(b),
                    _ => errs.push(("bit", format!("bit {b} is out of range 0..=15"))),
                },
                (t, Some(_)) => errs.push(("bit", format!("`bit` needs type \"bool\", not \"{t}\""))),
                (_, None) => {}
            }
        }
        let mut length = None;
        match (data_type, self.length) {
            (ModbusDataType::String, None) => {
                errs.push(("length", "type \"string\" needs `length` (bytes)".to_string()))
            }
            (ModbusDataType::String, Some(n)) => {
                let max = MAX_READ_REGISTERS * 2;
                match u16::try_from(n) {
                    Ok(n) if n >= 1 && u32::from(n) <= max => length = Some(n),
                    _ => errs.push(("length", format!("length {n} is out of range 1..={max}"))),
                }
            }
            (t, Some(_)) if !table.is_bits() => {
                errs.push(("length", format!("`length` needs type \"string\", not \"{t}\"")))
            }
            _ => {}
        }
        if !data_type.is_number() && !table.is_bits() {
            for (key, present) in [("scale", self.scale.is_some()), ("offset", self.offset.is_some())] {
                if present {
                    errs.push((key, format!("`{key}` needs a number type, not \"{data_type}\"")));
                }
            }
        }
        if let Some(s) = self.scale {
            if s == 0.0 || !s.is_finite() {
                errs.push(("scale", format!("scale {s} must be a finite, non-zero number")));
            }
        }
        if let Some(o) = self.offset {
            if !o.is_finite() {
                errs.push(("offset", format!("offset {o} must be finite")));
            }
        }
        let order = self.order.unwrap_or_default();
        if matches!(order, WordOrder::Cdab | WordOrder::Dcba) && data_type.fixed_words() < 2 {
            errs.push(("order", format!("word order swaps need a 32- or 64-bit type, not \"{data_type}\"")));
        }
        let addr = ModbusAddress {
            unit,
            table,
            register,
            data_type,
            order,
            bit,
            scale: self.scale,
            offset: self.offset,
            length,
        };
        if u16::try_from(self.register).is_ok() {
            let end = u32::from(register) + addr.word_count();
            if end > 65_536 {
                errs.push((
                    "register",
                    format!(
                        "{} starting at register {register} spans {} registers and runs past 65535",
                        data_type,
                        addr.word_count()
                    ),
                ));
            }
        }
        if errs.is_empty() {
            Ok(addr)
        } else {
            Err(errs)
        }
    }
}

// ---------------------------------------------------------------------------
// MQTT

/// Where a tag's value arrives over MQTT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttAddress {
    /// Topic filter to subscribe to; `+` matches one level, `#` the rest.
    pub topic: String,
    /// Where the value sits in a JSON payload; `None` means the payload is the value.
    pub json_path: Option<JsonPath>,
    /// Where the source timestamp sits in a JSON payload; `None` means time of arrival.
    pub ts_path: Option<JsonPath>,
    /// Sparkplug B metric name; the topic is then `spBv1.0/<group>/+/<node>[/<device>]`
    /// and the payloads are Sparkplug B protobuf, not JSON.
    pub metric: Option<String>,
    /// Labels filled from the topic, sorted by key: `{ machine = "{3}" }` puts
    /// the third level of each matching topic (a `+` of the filter) in label
    /// `machine`, so one tag gives one series per machine.
    pub labels: Vec<(String, LabelTemplate)>,
}

/// A label value written with `{N}` placeholders for topic levels (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelTemplate {
    parts: Vec<LabelPart>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelPart {
    Text(String),
    Level(usize),
}

impl LabelTemplate {
    /// Parses `text` for a filter of `levels` levels: every `{N}` must name a `+` level.
    fn parse(text: &str, filter: &[&str]) -> Result<LabelTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(LabelPart::Text(rest[..open].to_string()));
            }
            let close = rest[open..].find('}').ok_or_else(|| format!("`{text}`: `{{` without `}}`"))? + open;
            let n: usize = rest[open + 1..close].parse().map_err(|_| {
                format!("`{text}`: `{}` is not a topic level number such as {{3}}", &rest[open..=close])
            })?;
            match filter.get(n.wrapping_sub(1)) {
                Some(&"+") => parts.push(LabelPart::Level(n - 1)),
                Some(l) => {
                    return Err(format!("`{text}`: level {n} of the topic is `{l}`, not a `+` wildcard"));
                }
                None => return Err(format!("`{text}`: the topic has no level {n} (levels count from 1)")),
            }
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(LabelPart::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("a label value must not be empty".to_string());
        }
        Ok(LabelTemplate { parts })
    }

    /// The value for a topic (levels split at `/`) that matched the filter.
    pub fn fill(&self, levels: &[&str]) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                LabelPart::Text(t) => out.push_str(t),
                LabelPart::Level(i) => out.push_str(levels.get(*i).copied().unwrap_or("")),
            }
        }
        out
    }
}

/// The Sparkplug B namespace (first topic level) of version 3.0.
pub const SPARKPLUG_NAMESPACE: &str = "spBv1.0";

/// The MQTT address as written in the config, before it is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MqttAddressFields {
    /// Topic filter.
    topic: String,
    /// JSON path of the value.
    #[serde(default)]
    json_path: Option<String>,
    /// JSON path of the timestamp.
    #[serde(default)]
    ts_path: Option<String>,
    /// Sparkplug B metric name.
    #[serde(default)]
    metric: Option<String>,
    /// Labels from topic levels.
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

impl MqttAddressFields {
    /// Checks the address; problems come back as (key within the address, message).
    pub(crate) fn check(self) -> Result<MqttAddress, Vec<(&'static str, String)>> {
        let mut errs = Vec::new();
        if let Err(e) = check_topic_filter(&self.topic) {
            errs.push(("topic", e));
        }
        let mut path = |key: &'static str, text: Option<String>| {
            text.and_then(|t| match JsonPath::from_str(&t) {
                Ok(p) => Some(p),
                Err(e) => {
                    errs.push((key, e));
                    None
                }
            })
        };
        let json_path = path("json_path", self.json_path);
        let ts_path = path("ts_path", self.ts_path);
        let sparkplug_topic = self.topic.split('/').next() == Some(SPARKPLUG_NAMESPACE);
        match &self.metric {
            Some(m) => {
                if m.is_empty() {
                    errs.push(("metric", "metric name is empty".to_string()));
                }
                if let Err(e) = check_sparkplug_filter(&self.topic) {
                    errs.push(("topic", e));
                }
                for (key, present) in [("json_path", json_path.is_some()), ("ts_path", ts_path.is_some())] {
                    if present {
                        errs.push((key, format!("`{key}` does not apply to a Sparkplug B `metric`")));
                    }
                }
            }
            None if sparkplug_topic => errs.push((
                "topic",
                format!("`{}` is a Sparkplug B topic: name the metric with `metric = \"...\"`", self.topic),
            )),
            None => {}
        }
        let mut labels = Vec::new();
        let levels: Vec<&str> = self.topic.split('/').collect();
        for (key, text) in self.labels.iter().flatten() {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                errs.push(("labels", format!("label name `{key}` must be letters, digits and `_`")));
            } else if self.metric.is_some() {
                errs.push(("labels", "labels apply to JSON and plain payloads, not a Sparkplug B `metric`".into()));
            } else {
                match LabelTemplate::parse(text, &levels) {
                    Ok(t) => labels.push((key.clone(), t)),
                    Err(e) => errs.push(("labels", format!("label `{key}` = {e}"))),
                }
            }
        }
        if errs.is_empty() {
            Ok(MqttAddress { topic: self.topic, json_path, ts_path, metric: self.metric, labels })
        } else {
            Err(errs)
        }
    }
}

/// Checks the topic filter of a Sparkplug B metric: `spBv1.0/<group>/+/<node>[/<device>]`.
pub(crate) fn check_sparkplug_filter(topic: &str) -> Result<(), String> {
    let levels: Vec<&str> = topic.split('/').collect();
    let ok = matches!(levels.len(), 4 | 5)
        && levels[0] == SPARKPLUG_NAMESPACE
        && levels[2] == "+"
        && levels.iter().enumerate().all(|(i, l)| i == 2 || (!l.is_empty() && !l.contains(['+', '#'])));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad Sparkplug B topic `{topic}`: expected `{SPARKPLUG_NAMESPACE}/<group>/+/<node>` (node metrics) or \
             `{SPARKPLUG_NAMESPACE}/<group>/+/<node>/<device>` (device metrics)"
        ))
    }
}

/// Checks an MQTT topic filter: not empty, `+` and `#` only as whole levels, `#` only last.
pub(crate) fn check_topic_filter(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("topic filter is empty".to_string());
    }
    if topic.len() > 65_535 {
        return Err("topic filter is longer than 65535 bytes".to_string());
    }
    if topic.contains('\0') {
        return Err(format!("topic filter `{topic}` contains a NUL character"));
    }
    let levels: Vec<&str> = topic.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!("bad topic filter `{topic}`: `#` must be a whole level and the last one"));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("bad topic filter `{topic}`: `+` must be a whole level"));
        }
    }
    Ok(())
}

/// A small JSONPath: `$`, then `.key`, `['key']` or `[index]` steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    segments: Vec<JsonPathSegment>,
}

/// One step of a [`JsonPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonPathSegment {
    /// An object member.
    Key(String),
    /// An array element.
    Index(usize),
}

impl JsonPath {
    /// The steps from the document root.
    pub fn segments(&self) -> &[JsonPathSegment] {
        &self.segments
    }

    /// Follows the path through a JSON document.
    pub fn select<'v>(&self, mut v: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        for seg in &self.segments {
            v = match seg {
                JsonPathSegment::Key(k) => v.get(k.as_str())?,
                JsonPathSegment::Index(i) => v.get(*i)?,
            };
        }
        Some(v)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for JsonPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("bad JSON path `{s}`: {why}");
        let mut rest = s.strip_prefix('$').ok_or_else(|| bad("must start with `$`"))?;
        let mut segments = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let key = &after[..end];
                if key.is_empty() {
                    return Err(bad("empty key after `.`"));
                }
                if key.contains(['*', ']', '\'', '"', ' ']) {
                    return Err(bad(&format!("unsupported characters in key `{key}` (use ['...'])")));
                }
                segments.push(JsonPathSegment::Key(key.to_string()));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let close = after.find(']').ok_or_else(|| bad("`[` without `]`"))?;
                let inner = &after[..close];
                let quoted = inner
                    .strip_prefix('\'')
                    .and_then(|x| x.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')));
                if let Some(key) = quoted {
                    segments.push(JsonPathSegment::Key(key.to_string()));
                } else {
                    let i =
                        inner.parse().map_err(|_| bad(&format!("`[{inner}]` is neither an index nor a quoted key")))?;
                    segments.push(JsonPathSegment::Index(i));
                }
                rest = &after[close + 1..];
            } else {
                return Err(bad("expected `.key`, `['key']` or `[index]`"));
            }
        }
        Ok(JsonPath { text: s.to_string(), segments })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_parse_and_print() {
        for s in [
            "ns=2;s=Line1/Filler/BowlPressure",
            "ns=3;i=1001",
            "i=2258",
            "ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a",
            "ns=4;b=M/RbKBsRVkePCePcx24oRA==",
        ] {
            let id: OpcUaNodeId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
        let id: OpcUaNodeId = "ns=3;i=1001".parse().unwrap();
        assert_eq!(id.namespace, 3);
        assert_eq!(id.identifier, NodeIdentifier::Numeric(1001));
        for bad in [
            "",
            "ns=2",
            "ns=70000;i=1",
            "ns=x;i=1",
            "i=-1",
            "i=abc",
            "s=",
            "x=1",
            "g=1234",
            "b=!!",
            "b=",
            "Line1/Filler",
            "nsu=urn:x;s=a",
        ] {
            assert!(bad.parse::<OpcUaNodeId>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..20u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(decode_base64(&encode_base64(&bytes)).unwrap(), bytes);
        }
    }

    #[test]
    fn topic_filters() {
        for ok in ["a", "plant/line1/+/vib", "plant/#", "#", "+", "+/+", "/a"] {
            assert!(check_topic_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "plant/#/x", "plant/a#", "plant/l+/x", "a\0b"] {
            assert!(check_topic_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sparkplug_addresses() {
        let fields = |topic: &str, metric: Option<&str>, json: Option<&str>| MqttAddressFields {
            topic: topic.into(),
            json_path: json.map(Into::into),
            ts_path: None,
            metric: metric.map(Into::into),
            labels: None,
        };
        let a = fields("spBv1.0/line1/+/energy/filler", Some("Power"), None).check().unwrap();
        assert_eq!(a.metric.as_deref(), Some("Power"));
        assert!(fields("spBv1.0/line1/+/energy", Some("Temp"), None).check().is_ok());
        for (topic, metric, json, key) in [
            ("spBv1.0/line1/DDATA/energy/filler", Some("Power"), None, "topic"),
            ("spBv1.0/+/+/energy", Some("Power"), None, "topic"),
            ("plant/line1/+/energy", Some("Power"), None, "topic"),
            ("spBv1.0/line1/+/energy/filler", Some(""), None, "metric"),
            ("spBv1.0/line1/+/energy/filler", Some("Power"), Some("$.x"), "json_path"),
            ("spBv1.0/line1/+/energy/filler", None, None, "topic"),
        ] {
            let errs = fields(topic, metric, json).check().unwrap_err();
            assert!(errs.iter().any(|(k, _)| *k == key), "{topic} {metric:?}: {errs:?}");
        }
    }

    #[test]
    fn json_paths() {
        let p: JsonPath = "$.data[2]['rms value'].x".parse().unwrap();
        assert_eq!(
            p.segments(),
            &[
                JsonPathSegment::Key("data".into()),
                JsonPathSegment::Index(2),
                JsonPathSegment::Key("rms value".into()),
                JsonPathSegment::Key("x".into()),
            ]
        );
        let doc = serde_json::json!({"data": [0, 1, {"rms value": {"x": 4.5}}]});
        assert_eq!(p.select(&doc), Some(&serde_json::json!(4.5)));
        assert!("$".parse::<JsonPath>().unwrap().segments().is_empty());
        for bad in ["rms", "$.", "$..a", "$[x]", "$[1", "$a", "$.*"] {
            assert!(bad.parse::<JsonPath>().is_err(), "{bad}");
        }
    }
}
