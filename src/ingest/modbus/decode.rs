//! Decoding raw Modbus registers and bits into sample values.
//!
//! Pure functions: a tag's [`ModbusAddress`] says how its registers read
//! (type, byte/word order, bit, scale, offset, string length); the result is a
//! [`Value`] or a [`DecodeError`] that the poller turns into `BAD_DECODING`.
//!
//! Byte orders name the bytes of a 32-bit value `A B C D` from most to least
//! significant as they appear on the wire, and extend to 64-bit values the
//! usual way: `ABCD` big-endian, `CDAB` words in reverse order (low word
//! first), `BADC` the bytes of each register swapped, `DCBA` little-endian.

use thiserror::Error;

use crate::config::{ModbusAddress, ModbusDataType, WordOrder};
use crate::domain::Value;

/// Why registers could not be turned into a value.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum DecodeError {
    /// Fewer registers than the type needs (a short answer).
    #[error("{got} registers for a value that needs {want}")]
    Short {
        /// Registers needed.
        want: usize,
        /// Registers received.
        got: usize,
    },
    /// A float that is NaN or infinite (also after scale and offset).
    #[error("not a finite number")]
    NonFinite,
    /// A string that is not UTF-8.
    #[error("string is not UTF-8")]
    NotUtf8,
}

/// The value of a coil or discrete input.
pub fn decode_bit(bit: bool) -> Value {
    Value::Bool(bit)
}

/// Puts the registers of a value into big-endian byte order (`ABCD...`).
fn ordered_bytes(words: &[u16], order: WordOrder) -> Vec<u8> {
    let mut w: Vec<u16> = words.to_vec();
    if matches!(order, WordOrder::Cdab | WordOrder::Dcba) {
        w.reverse();
    }
    let swap_bytes = matches!(order, WordOrder::Badc | WordOrder::Dcba);
    w.iter()
        .flat_map(|x| {
            let b = x.to_be_bytes();
            if swap_bytes {
                [b[1], b[0]]
            } else {
                b
            }
        })
        .collect()
}

/// The raw number the registers hold, before scale and offset.
enum Raw {
    Int(i128),
    Float(f64),
}

/// Decodes the registers of one register-table value (`words` starts at the
/// tag's register and holds at least [`ModbusAddress::word_count`] registers).
pub fn decode_registers(addr: &ModbusAddress, words: &[u16]) -> Result<Value, DecodeError> {
    let want = addr.word_count() as usize;
    if words.len() < want {
        return Err(DecodeError::Short { want, got: words.len() });
    }
    let words = &words[..want];
    let bytes = ordered_bytes(words, addr.order);
    let raw = match addr.data_type {
        ModbusDataType::Bool => {
            let w = u16::from_be_bytes([bytes[0], bytes[1]]);
            return Ok(Value::Bool(w >> addr.bit.unwrap_or(0).min(15) & 1 == 1));
        }
        ModbusDataType::String => {
            let len = usize::from(addr.length.unwrap_or(0)).min(bytes.len());
            let text = &bytes[..len];
            let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
            let s = std::str::from_utf8(&text[..end]).map_err(|_| DecodeError::NotUtf8)?;
            return Ok(Value::Str(s.trim_end().to_string()));
        }
        ModbusDataType::U16 => Raw::Int(u16::from_be_bytes([bytes[0], bytes[1]]).into()),
        ModbusDataType::I16 => Raw::Int(i16::from_be_bytes([bytes[0], bytes[1]]).into()),
        ModbusDataType::U32 => Raw::Int(u32::from_be_bytes(arr(&bytes)).into()),
        ModbusDataType::I32 => Raw::Int(i32::from_be_bytes(arr(&bytes)).into()),
        ModbusDataType::U64 => Raw::Int(u64::from_be_bytes(arr(&bytes)).into()),
        ModbusDataType::I64 => Raw::Int(i64::from_be_bytes(arr(&bytes)).into()),
        ModbusDataType::F32 => Raw::Float(crate::ingest::plc_real(f32::from_be_bytes(arr(&bytes)))),
        ModbusDataType::F64 => Raw::Float(f64::from_be_bytes(arr(&bytes))),
    };
    scaled(raw, addr.scale, addr.offset)
}

/// The first `N` bytes as an array (the caller checked the length).
fn arr<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&bytes[..N]);
    a
}

/// Applies `value * scale + offset`; integers stay integers when neither is set.
/// `x * scale`, but a decimal scale (0.1, 0.01, ...) divides by its inverse so
/// that 403 × 0.1 reads 40.3, not 40.300000000000004.
fn apply_scale(x: f64, scale: f64) -> f64 {
    let inv = 1.0 / scale;
    if scale != 0.0 && scale.abs() < 1.0 && (inv - inv.round()).abs() < 1e-9 * inv.abs() {
        x / inv.round()
    } else {
        x * scale
    }
}

fn scaled(raw: Raw, scale: Option<f64>, offset: Option<f64>) -> Result<Value, DecodeError> {
    let x = match raw {
        Raw::Int(i) if scale.is_none() && offset.is_none() => {
            return Ok(match i64::try_from(i) {
                Ok(v) => Value::I64(v),
                // u64 above i64::MAX: keep the magnitude as a float.
                Err(_) => Value::F64(i as f64),
            });
        }
        Raw::Int(i) => i as f64,
        Raw::Float(f) => f,
    };
    let y = apply_scale(x, scale.unwrap_or(1.0)) + offset.unwrap_or(0.0);
    if y.is_finite() {
        Ok(Value::F64(y))
    } else {
        Err(DecodeError::NonFinite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_scales_give_the_decimal() {
        assert_eq!(apply_scale(403.0, 0.1), 40.3);
        assert_eq!(apply_scale(765_123.0, 0.01), 7651.23);
        assert_eq!(apply_scale(2_801.0, 0.001), 2.801);
        assert_eq!(apply_scale(3.0, 2.5), 7.5);
    }
    use crate::config::ModbusTable;

    fn addr(t: ModbusDataType, order: WordOrder) -> ModbusAddress {
        ModbusAddress {
            unit: 1,
            table: ModbusTable::Holding,
            register: 0,
            data_type: t,
            order,
            bit: None,
            scale: None,
            offset: None,
            length: None,
        }
    }

    /// Lays out big-endian bytes as registers in `order` (the encoder side).
    fn encode(be: &[u8], order: WordOrder) -> Vec<u16> {
        let mut w: Vec<u16> = be
            .chunks(2)
            .map(|c| match order {
                WordOrder::Badc | WordOrder::Dcba => u16::from_le_bytes([c[0], c[1]]),
                _ => u16::from_be_bytes([c[0], c[1]]),
            })
            .collect();
        if matches!(order, WordOrder::Cdab | WordOrder::Dcba) {
            w.reverse();
        }
        w
    }

    const ORDERS: [WordOrder; 4] = [WordOrder::Abcd, WordOrder::Cdab, WordOrder::Badc, WordOrder::Dcba];

    #[test]
    fn wire_layouts_of_a_32_bit_value() {
        // 0xAABBCCDD as the four orders put it on the wire.
        let a = addr(ModbusDataType::U32, WordOrder::Abcd);
        assert_eq!(decode_registers(&a, &[0xAABB, 0xCCDD]), Ok(Value::I64(0xAABBCCDD)));
        let a = addr(ModbusDataType::U32, WordOrder::Cdab);
        assert_eq!(decode_registers(&a, &[0xCCDD, 0xAABB]), Ok(Value::I64(0xAABBCCDD)));
        let a = addr(ModbusDataType::U32, WordOrder::Badc);
        assert_eq!(decode_registers(&a, &[0xBBAA, 0xDDCC]), Ok(Value::I64(0xAABBCCDD)));
        let a = addr(ModbusDataType::U32, WordOrder::Dcba);
        assert_eq!(decode_registers(&a, &[0xDDCC, 0xBBAA]), Ok(Value::I64(0xAABBCCDD)));
        // 64-bit CDAB: the words in reverse order.
        let a = addr(ModbusDataType::U64, WordOrder::Cdab);
        assert_eq!(decode_registers(&a, &[0x7788, 0x5566, 0x3344, 0x1122]), Ok(Value::I64(0x1122334455667788)));
    }

    #[test]
    fn every_number_type_in_every_order() {
        for order in ORDERS {
            let wide = matches!(order, WordOrder::Cdab | WordOrder::Dcba);
            if !wide {
                let a = addr(ModbusDataType::U16, order);
                assert_eq!(decode_registers(&a, &encode(&65_000u16.to_be_bytes(), order)), Ok(Value::I64(65_000)));
                let a = addr(ModbusDataType::I16, order);
                assert_eq!(decode_registers(&a, &encode(&(-1234i16).to_be_bytes(), order)), Ok(Value::I64(-1234)));
            }
            let a = addr(ModbusDataType::U32, order);
            assert_eq!(
                decode_registers(&a, &encode(&4_000_000_000u32.to_be_bytes(), order)),
                Ok(Value::I64(4e9 as i64))
            );
            let a = addr(ModbusDataType::I32, order);
            assert_eq!(
                decode_registers(&a, &encode(&(-7_654_321i32).to_be_bytes(), order)),
                Ok(Value::I64(-7_654_321))
            );
            let a = addr(ModbusDataType::U64, order);
            assert_eq!(decode_registers(&a, &encode(&(1u64 << 40).to_be_bytes(), order)), Ok(Value::I64(1 << 40)));
            assert_eq!(decode_registers(&a, &encode(&u64::MAX.to_be_bytes(), order)), Ok(Value::F64(u64::MAX as f64)));
            let a = addr(ModbusDataType::I64, order);
            assert_eq!(
                decode_registers(&a, &encode(&(-(1i64 << 50)).to_be_bytes(), order)),
                Ok(Value::I64(-(1 << 50)))
            );
            let a = addr(ModbusDataType::F32, order);
            assert_eq!(decode_registers(&a, &encode(&3.25f32.to_be_bytes(), order)), Ok(Value::F64(3.25)));
            let a = addr(ModbusDataType::F64, order);
            assert_eq!(decode_registers(&a, &encode(&(-1.0e10f64).to_be_bytes(), order)), Ok(Value::F64(-1.0e10)));
        }
    }

    #[test]
    fn scale_and_offset() {
        let mut a = addr(ModbusDataType::I32, WordOrder::Cdab);
        a.scale = Some(0.001);
        assert_eq!(decode_registers(&a, &encode(&2_500i32.to_be_bytes(), WordOrder::Cdab)), Ok(Value::F64(2.5)));
        let mut a = addr(ModbusDataType::U16, WordOrder::Abcd);
        a.scale = Some(0.5);
        a.offset = Some(-10.0);
        assert_eq!(decode_registers(&a, &[40]), Ok(Value::F64(10.0)));
        let mut a = addr(ModbusDataType::F32, WordOrder::Abcd);
        a.offset = Some(1.0);
        assert_eq!(decode_registers(&a, &encode(&2.0f32.to_be_bytes(), WordOrder::Abcd)), Ok(Value::F64(3.0)));
    }

    #[test]
    fn non_finite_floats_are_decoding_errors() {
        for order in ORDERS {
            let a = addr(ModbusDataType::F32, order);
            for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                assert_eq!(decode_registers(&a, &encode(&x.to_be_bytes(), order)), Err(DecodeError::NonFinite));
            }
            let a = addr(ModbusDataType::F64, order);
            assert_eq!(decode_registers(&a, &encode(&f64::NAN.to_be_bytes(), order)), Err(DecodeError::NonFinite));
        }
        // A finite float that overflows after scaling.
        let mut a = addr(ModbusDataType::F64, WordOrder::Abcd);
        a.scale = Some(1e300);
        assert_eq!(
            decode_registers(&a, &encode(&1e300f64.to_be_bytes(), WordOrder::Abcd)),
            Err(DecodeError::NonFinite)
        );
    }

    #[test]
    fn bits_of_registers_and_tables() {
        let mut a = addr(ModbusDataType::Bool, WordOrder::Abcd);
        for bit in 0..16u8 {
            a.bit = Some(bit);
            assert_eq!(decode_registers(&a, &[1 << bit]), Ok(Value::Bool(true)));
            assert_eq!(decode_registers(&a, &[!(1u16 << bit)]), Ok(Value::Bool(false)));
        }
        // BADC swaps the register's bytes before the bit is taken.
        a.order = WordOrder::Badc;
        a.bit = Some(0);
        assert_eq!(decode_registers(&a, &[0x0100]), Ok(Value::Bool(true)));
        assert_eq!(decode_bit(true), Value::Bool(true));
        assert_eq!(decode_bit(false), Value::Bool(false));
    }

    #[test]
    fn strings() {
        let mut a = addr(ModbusDataType::String, WordOrder::Abcd);
        a.length = Some(7);
        // "LOT-42" padded with NUL; odd length reads 4 registers.
        let words = [0x4C4F, 0x542D, 0x3432, 0x0000];
        assert_eq!(decode_registers(&a, &words), Ok(Value::Str("LOT-42".into())));
        a.order = WordOrder::Badc;
        let swapped: Vec<u16> = words.iter().map(|w| w.swap_bytes()).collect();
        assert_eq!(decode_registers(&a, &swapped), Ok(Value::Str("LOT-42".into())));
        a.order = WordOrder::Abcd;
        assert_eq!(decode_registers(&a, &[0xFFFE, 0, 0, 0]), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn short_answers_are_errors() {
        let a = addr(ModbusDataType::F64, WordOrder::Abcd);
        assert_eq!(decode_registers(&a, &[1, 2]), Err(DecodeError::Short { want: 4, got: 2 }));
    }
}
