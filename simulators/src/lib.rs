//! `linesim`: simulated production lines for tests and benchmarks.

pub mod synthetic;

pub use synthetic::{line_tags, Line, SynthKind, SynthTag, SynthValue};
