//! Configuration: TOML with serde, validated at load time with file/line/key errors.

pub mod units;
