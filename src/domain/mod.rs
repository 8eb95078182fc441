//! The shared vocabulary: series, samples, values, quality, events.
//!
//! Every other module speaks in these types. Time inside the process is UTC
//! nanoseconds since the Unix epoch (`Timestamp`); local time only appears at
//! the edges (shift calendar, report text).

mod event;
mod machine_state;
mod quality;
mod sample;
mod series;

pub use event::{Event, EventKind};
pub use machine_state::MachineState;
pub use quality::{Quality, QualityClass};
pub use sample::{Sample, Value, ValueKind};
pub use series::{SeriesId, SeriesKey};

/// UTC nanoseconds since the Unix epoch.
pub type Timestamp = i64;

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The current wall-clock time as a [`Timestamp`].
pub fn now_ns() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
