use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Quality, SeriesId, Timestamp};

/// One value of a tag at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series this sample belongs to.
    pub series: SeriesId,
    /// Source timestamp, UTC nanoseconds.
    pub ts: Timestamp,
    /// The value.
    pub value: Value,
    /// Its quality.
    pub quality: Quality,
}

/// A sample value. Enumerated machine states travel as strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A measurement.
    F64(f64),
    /// A counter or an integer register.
    I64(i64),
    /// A digital signal.
    Bool(bool),
    /// An enumerated state or text.
    Str(String),
}

/// The type of a series' values; fixed when the series is created.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// 64-bit float.
    F64,
    /// 64-bit signed integer.
    I64,
    /// Boolean.
    Bool,
    /// String (enumerated state).
    Str,
}

impl ValueKind {
    /// Stable one-byte code used in files.
    pub const fn code(self) -> u8 {
        match self {
            ValueKind::F64 => 0,
            ValueKind::I64 => 1,
            ValueKind::Bool => 2,
            ValueKind::Str => 3,
        }
    }

    /// Inverse of [`ValueKind::code`].
    pub const fn from_code(code: u8) -> Option<ValueKind> {
        match code {
            0 => Some(ValueKind::F64),
            1 => Some(ValueKind::I64),
            2 => Some(ValueKind::Bool),
            3 => Some(ValueKind::Str),
            _ => None,
        }
    }

    /// True for kinds that aggregate numerically (f64, i64, bool as 0/1).
    pub const fn is_numeric(self) -> bool {
        !matches!(self, ValueKind::Str)
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueKind::F64 => "f64",
            ValueKind::I64 => "i64",
            ValueKind::Bool => "bool",
            ValueKind::Str => "string",
        })
    }
}

impl Value {
    /// The kind of this value.
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::F64(_) => ValueKind::F64,
            Value::I64(_) => ValueKind::I64,
            Value::Bool(_) => ValueKind::Bool,
            Value::Str(_) => ValueKind::Str,
        }
    }

    /// The value as a number, where it has one (booleans are 0 and 1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            Value::I64(v) => Some(*v as f64),
            Value::Bool(v) => Some(if *v { 1.0 } else { 0.0 }),
            Value::Str(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::F64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(v) => f.write_str(v),
        }
    }
}
