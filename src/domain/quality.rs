use std::fmt;

use serde::{Deserialize, Serialize};

/// The quality of a sample, kept as an OPC UA style 32-bit status code: the
/// top two bits give the class (00 good, 01 uncertain, 10/11 bad) and the
/// rest the reason. OPC UA codes are kept as they came from the server;
/// other protocols map onto the reasons below, so a quality is one small
/// integer in the store and still says why a value is not good.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quality(pub u32);

/// The class of a [`Quality`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QualityClass {
    /// The value can be trusted.
    Good,
    /// The value is usable with care (e.g. last usable value, sensor not accurate).
    Uncertain,
    /// The value must not be used; the reason code says why.
    Bad,
}

impl Quality {
    /// Good quality.
    pub const GOOD: Quality = Quality(0);
    /// Bad: the connection to the device is lost (OPC UA `BadCommunicationError`).
    pub const BAD_COMMS: Quality = Quality(0x8005_0000);
    /// Bad: the payload could not be decoded (OPC UA `BadDecodingError`).
    pub const BAD_DECODING: Quality = Quality(0x8007_0000);
    /// Bad: the device did not answer in time (OPC UA `BadTimeout`).
    pub const BAD_TIMEOUT: Quality = Quality(0x800A_0000);
    /// Bad: no more specific reason (OPC UA `Bad`).
    pub const BAD: Quality = Quality(0x8000_0000);
    /// Uncertain: no more specific reason (OPC UA `Uncertain`).
    pub const UNCERTAIN: Quality = Quality(0x4000_0000);
    /// Uncertain: the last usable value, repeated (OPC UA `UncertainLastUsableValue`).
    pub const UNCERTAIN_LAST_USABLE: Quality = Quality(0x4090_0000);

    /// Bad with a Modbus exception code (1 illegal function, 2 illegal data
    /// address, 3 illegal data value, 4 device failure, ...). Laid out in the
    /// vendor-specific range so it never collides with an OPC UA code.
    pub const fn modbus_exception(code: u8) -> Quality {
        Quality(0x8000_0000 | 0x0F00_0000 | code as u32)
    }

    /// Builds a quality from a raw status code.
    pub const fn from_status(code: u32) -> Quality {
        Quality(code)
    }

    /// The class of this quality.
    pub const fn class(self) -> QualityClass {
        match self.0 >> 30 {
            0 => QualityClass::Good,
            1 => QualityClass::Uncertain,
            _ => QualityClass::Bad,
        }
    }

    /// True for good quality.
    pub const fn is_good(self) -> bool {
        matches!(self.class(), QualityClass::Good)
    }

    /// The raw status code.
    pub const fn code(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.class() {
            QualityClass::Good if self.0 == 0 => f.write_str("good"),
            QualityClass::Good => write!(f, "good:0x{:08X}", self.0),
            QualityClass::Uncertain => write!(f, "uncertain:0x{:08X}", self.0),
            QualityClass::Bad => write!(f, "bad:0x{:08X}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_top_bits() {
        assert_eq!(Quality::GOOD.class(), QualityClass::Good);
        assert_eq!(Quality::UNCERTAIN_LAST_USABLE.class(), QualityClass::Uncertain);
        assert_eq!(Quality::BAD_COMMS.class(), QualityClass::Bad);
        assert_eq!(Quality::modbus_exception(2).class(), QualityClass::Bad);
        assert_eq!(Quality::modbus_exception(2).to_string(), "bad:0x8F000002");
    }
}
