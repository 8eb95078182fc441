//! Plain and JSON payloads: the value of a tag and, optionally, its source timestamp.

use crate::config::JsonPath;
use crate::domain::{Timestamp, Value, ValueKind};

/// Why a payload yields no value for a tag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not UTF-8 text.
    #[error("payload is not UTF-8 text")]
    NotText,
    /// The payload is not JSON.
    #[error("payload is not JSON: {0}")]
    BadJson(String),
    /// The JSON path leads nowhere.
    #[error("no value at `{0}`")]
    Missing(String),
    /// The value is of a type the tag cannot take.
    #[error("{0}")]
    WrongType(String),
    /// The timestamp cannot be read.
    #[error("bad timestamp at `{path}`: {why}")]
    BadTimestamp {
        /// The path of the timestamp.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A payload parsed once, shared by the tags that read it.
pub enum Parsed<'p> {
    /// Not parsed as JSON (every tag on the topic takes the payload as its value).
    Raw(&'p [u8]),
    /// A JSON document.
    Json(serde_json::Value),
}

impl<'p> Parsed<'p> {
    /// Parses `payload` as JSON when some tag needs a path into it.
    pub fn new(payload: &'p [u8], json: bool) -> Result<Parsed<'p>, DecodeError> {
        if !json {
            return Ok(Parsed::Raw(payload));
        }
        serde_json::from_slice(payload).map(Parsed::Json).map_err(|e| DecodeError::BadJson(e.to_string()))
    }
}

/// The value for a tag of `kind`: the whole payload when `path` is `None`,
/// else the JSON value at `path`.
pub fn value(parsed: &Parsed<'_>, raw: &[u8], path: Option<&JsonPath>, kind: ValueKind) -> Result<Value, DecodeError> {
    match path {
        None => plain(raw, kind),
        Some(p) => {
            let Parsed::Json(doc) = parsed else {
                // Callers parse as JSON when any tag has a path; a raw parse here is a bug, not input.
                return Err(DecodeError::BadJson("payload was not parsed as JSON".into()));
            };
            let v = p.select(doc).ok_or_else(|| DecodeError::Missing(p.to_string()))?;
            json_value(v, kind).map_err(|why| DecodeError::WrongType(format!("value at `{p}`: {why}")))
        }
    }
}

/// A plain payload: `21.5`, `-3`, `true`/`false`, `on`/`off`, or text for a string tag.
pub fn plain(raw: &[u8], kind: ValueKind) -> Result<Value, DecodeError> {
    let text = std::str::from_utf8(raw).map_err(|_| DecodeError::NotText)?;
    if kind == ValueKind::Str {
        return Ok(Value::Str(text.to_string()));
    }
    let t = text.trim();
    let bool_of = |t: &str| match t {
        "true" | "TRUE" | "True" | "on" | "ON" => Some(true),
        "false" | "FALSE" | "False" | "off" | "OFF" => Some(false),
        _ => None,
    };
    let bad = || DecodeError::WrongType(format!("payload `{}` is not a {}", snippet(t), kind_name(kind)));
    match kind {
        ValueKind::Bool => match bool_of(t) {
            Some(b) => Ok(Value::Bool(b)),
            None => t.parse::<f64>().ok().filter(|x| x.is_finite()).map(|x| Value::Bool(x != 0.0)).ok_or_else(bad),
        },
        ValueKind::I64 => {
            if let Ok(i) = t.parse::<i64>() {
                return Ok(Value::I64(i));
            }
            match (t.parse::<f64>(), bool_of(t)) {
                (Ok(x), _) if x.is_finite() && x.abs() < 9.2e18 => Ok(Value::I64(x.round() as i64)),
                (_, Some(b)) => Ok(Value::I64(b as i64)),
                _ => Err(bad()),
            }
        }
        _ => match (t.parse::<f64>(), bool_of(t)) {
            (Ok(x), _) => Ok(Value::F64(x)),
            (_, Some(b)) => Ok(Value::F64(b as u8 as f64)),
            _ => Err(bad()),
        },
    }
}

/// A JSON value as a value of `kind`: numbers, booleans, strings (numeric
/// strings for number tags); objects, arrays and `null` are errors.
pub fn json_value(v: &serde_json::Value, kind: ValueKind) -> Result<Value, String> {
    use serde_json::Value as J;
    match (v, kind) {
        (J::Null, _) => Err("is null".into()),
        (J::Array(_) | J::Object(_), _) => Err(format!("is an {}, not a {}", json_type(v), kind_name(kind))),
        (J::String(s), ValueKind::Str) => Ok(Value::Str(s.clone())),
        (J::String(s), k) => plain(s.as_bytes(), k).map_err(|e| e.to_string()),
        (J::Bool(b), _) => Ok(Value::Bool(*b)),
        (J::Number(n), ValueKind::I64) => match n.as_i64() {
            Some(i) => Ok(Value::I64(i)),
            None => n.as_f64().map(Value::F64).ok_or_else(|| format!("number {n} is out of range")),
        },
        (J::Number(n), _) => n.as_f64().map(Value::F64).ok_or_else(|| format!("number {n} is out of range")),
    }
}

/// The source timestamp at `path`: epoch seconds, milliseconds, microseconds or
/// nanoseconds (told apart by magnitude), or an RFC 3339 string.
pub fn timestamp(doc: &serde_json::Value, path: &JsonPath) -> Result<Timestamp, DecodeError> {
    let bad = |why: String| DecodeError::BadTimestamp { path: path.to_string(), why };
    let v = path.select(doc).ok_or_else(|| DecodeError::Missing(path.to_string()))?;
    match v {
        // Integers exactly (an epoch in ms times 1e6 is past f64's 53 bits); fractions as floats.
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => epoch_integer(i),
            None => n.as_f64().and_then(epoch_number),
        }
        .ok_or_else(|| bad(format!("{n} is not an epoch time"))),
        serde_json::Value::String(s) => rfc3339(s.as_str()).map_err(bad),
        other => Err(bad(format!("is an {}, not a number or an RFC 3339 string", json_type(other)))),
    }
}

/// An integer epoch time in s, ms, µs or ns, by magnitude, exactly.
pub fn epoch_integer(x: i64) -> Option<Timestamp> {
    if x <= 0 {
        return None;
    }
    let scale = if x < 10_000_000_000 {
        1_000_000_000
    } else if x < 10_000_000_000_000 {
        1_000_000
    } else if x < 10_000_000_000_000_000 {
        1_000
    } else {
        1
    };
    x.checked_mul(scale)
}

/// An epoch time in s, ms, µs or ns, by magnitude (years ~1973..~2286 in each unit).
pub fn epoch_number(x: f64) -> Option<Timestamp> {
    if !x.is_finite() || x <= 0.0 {
        return None;
    }
    let ns = if x < 1e10 {
        x * 1e9
    } else if x < 1e13 {
        x * 1e6
    } else if x < 1e16 {
        x * 1e3
    } else {
        x
    };
    (ns < 9.2e18).then_some(ns.round() as i64)
}

/// An RFC 3339 time (`2026-11-28T06:00:10.000Z`, `...+01:00`) in ns since the epoch.
pub fn rfc3339(s: &str) -> Result<Timestamp, String> {
    let s = s.trim();
    // humantime reads UTC (`Z`) only; apply a numeric offset ourselves.
    let (base, offset_s) = split_offset(s).ok_or_else(|| format!("`{}` is not an RFC 3339 time", snippet(s)))?;
    let t =
        humantime::parse_rfc3339_weak(&base).map_err(|e| format!("`{}` is not an RFC 3339 time: {e}", snippet(s)))?;
    let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("`{}` is before 1970", snippet(s)))?;
    let ns = i64::try_from(d.as_nanos()).map_err(|_| format!("`{}` is out of range", snippet(s)))?;
    Ok(ns - offset_s * 1_000_000_000)
}

/// Splits `...Z` / `...+hh:mm` / `...-hh:mm` into the UTC-less base and the offset in seconds.
fn split_offset(s: &str) -> Option<(String, i64)> {
    if let Some(b) = s.strip_suffix(['Z', 'z']) {
        return Some((b.to_string(), 0));
    }
    let tpos = s.find(['T', 't', ' '])?;
    let tail = &s[tpos..];
    let sign_pos = tail.rfind(['+', '-'])?;
    let (base, off) = (&s[..tpos + sign_pos], &tail[sign_pos..]);
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let (h, m) = off[1..].split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    if h > 23 || m > 59 {
        return None;
    }
    Some((base.to_string(), sign * (h * 3600 + m * 60)))
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn kind_name(k: ValueKind) -> &'static str {
    match k {
        ValueKind::F64 => "number",
        ValueKind::I64 => "integer",
        ValueKind::Bool => "boolean",
        ValueKind::Str => "string",
    }
}

/// At most 40 characters of `s`, for messages.
pub fn snippet(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> JsonPath {
        s.parse().expect("path")
    }

    #[test]
    fn plain_payloads() {
        assert_eq!(plain(b"21.5", ValueKind::F64), Ok(Value::F64(21.5)));
        assert_eq!(plain(b" -3\n", ValueKind::I64), Ok(Value::I64(-3)));
        assert_eq!(plain(b"2.6", ValueKind::I64), Ok(Value::I64(3)));
        assert_eq!(plain(b"true", ValueKind::Bool), Ok(Value::Bool(true)));
        assert_eq!(plain(b"0", ValueKind::Bool), Ok(Value::Bool(false)));
        assert_eq!(plain(b"off", ValueKind::F64), Ok(Value::F64(0.0)));
        assert_eq!(plain(b"Running", ValueKind::Str), Ok(Value::Str("Running".into())));
        assert!(matches!(plain(b"abc", ValueKind::F64), Err(DecodeError::WrongType(_))));
        assert!(matches!(plain(b"maybe", ValueKind::Bool), Err(DecodeError::WrongType(_))));
        assert_eq!(plain(&[0xff, 0xfe], ValueKind::F64), Err(DecodeError::NotText));
    }

    #[test]
    fn json_paths_and_types() {
        let raw = br#"{"a":{"b":1.5},"arr":[7,"8",true],"s":"x","n":null,"o":{}}"#;
        let parsed = Parsed::new(raw, true).expect("json");
        let v = |p: &str, k| value(&parsed, raw, Some(&path(p)), k);
        assert_eq!(v("$.a.b", ValueKind::F64), Ok(Value::F64(1.5)));
        assert_eq!(v("$.arr[0]", ValueKind::I64), Ok(Value::I64(7)));
        assert_eq!(v("$.arr[1]", ValueKind::F64), Ok(Value::F64(8.0)));
        assert_eq!(v("$.arr[2]", ValueKind::Bool), Ok(Value::Bool(true)));
        assert_eq!(v("$.s", ValueKind::Str), Ok(Value::Str("x".into())));
        assert!(matches!(v("$.s", ValueKind::F64), Err(DecodeError::WrongType(_))));
        assert!(matches!(v("$.n", ValueKind::F64), Err(DecodeError::WrongType(_))));
        assert!(matches!(v("$.o", ValueKind::F64), Err(DecodeError::WrongType(_))));
        assert_eq!(v("$.a.c", ValueKind::F64), Err(DecodeError::Missing("$.a.c".into())));
        assert_eq!(v("$.arr[9]", ValueKind::F64), Err(DecodeError::Missing("$.arr[9]".into())));
        assert!(matches!(Parsed::new(b"{\"a\":", true), Err(DecodeError::BadJson(_))));
        // A plain tag on the same topic takes the raw payload.
        assert_eq!(value(&Parsed::Raw(b"4"), b"4", None, ValueKind::F64), Ok(Value::F64(4.0)));
    }

    #[test]
    fn timestamps() {
        let doc = serde_json::json!({
            "s": 1_704_067_210, "ms": 1_704_067_210_000_i64, "us": 1_704_067_210_000_000_i64,
            "ns": 1_704_067_210_000_000_000_i64, "frac": 1_704_067_210.5,
            "z": "2024-01-01T00:00:10.000Z", "off": "2024-01-01T01:00:10+01:00", "neg": "2023-12-31T23:00:10-01:00",
            "bad": "yesterday", "zero": 0, "obj": {}
        });
        let want = 1_704_067_210_000_000_000;
        for p in ["$.s", "$.ms", "$.us", "$.ns", "$.z", "$.off", "$.neg"] {
            assert_eq!(timestamp(&doc, &path(p)), Ok(want), "{p}");
        }
        assert_eq!(timestamp(&doc, &path("$.frac")), Ok(want + 500_000_000));
        // Integers are exact: 1795945769145 ms * 1e6 as a float would be ...144999936 ns.
        let odd = serde_json::json!({ "ms": 1_795_945_769_145_i64, "us": 1_795_945_769_145_123_i64 });
        assert_eq!(timestamp(&odd, &path("$.ms")), Ok(1_795_945_769_145_000_000));
        assert_eq!(timestamp(&odd, &path("$.us")), Ok(1_795_945_769_145_123_000));
        for p in ["$.bad", "$.zero", "$.obj"] {
            assert!(matches!(timestamp(&doc, &path(p)), Err(DecodeError::BadTimestamp { .. })), "{p}");
        }
        assert!(matches!(timestamp(&doc, &path("$.none")), Err(DecodeError::Missing(_))));
    }
}
