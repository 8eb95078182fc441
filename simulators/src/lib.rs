//! `linesim`: simulated production lines for tests and benchmarks.
//!
//! - `line`: the bottling line (tags, physics, faults, ground truth);
//! - `server`: OPC UA, Modbus TCP and MQTT servers that expose a running line;
//! - `synthetic`: a scalable synthetic line for store benchmarks.

pub mod line;
pub mod rng;
pub mod server;
pub mod synthetic;

pub use synthetic::{line_tags, Line, SynthKind, SynthTag, SynthValue};
