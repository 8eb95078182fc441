use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Anything that happens on the line that is not a sample: state changes,
/// alarms, anomalies, acknowledgements, reports, audit lines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Row id in the event log (0 before it is stored).
    #[serde(default)]
    pub id: i64,
    /// When it happened, UTC nanoseconds.
    pub ts: Timestamp,
    /// The asset it concerns, if any (`filler`).
    pub asset: Option<String>,
    /// What kind of event.
    pub kind: EventKind,
    /// Severity 0 (info) ..= 1000 (critical), ISA-18.2 style priority.
    pub severity: u16,
    /// One line a person can read.
    pub message: String,
    /// Structured detail (tag names, values, scores, user, comment ...).
    #[serde(default)]
    pub details: serde_json::Value,
}

/// The kinds of [`Event`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A machine changed state (running, starved, fault ...).
    StateChange,
    /// An alarm transition.
    Alarm,
    /// An anomaly detected by the analytics.
    Anomaly,
    /// An acknowledgement of an alarm or anomaly.
    Acknowledgement,
    /// A generated report.
    Report,
    /// An audit line (config change, write to a PLC, login ...).
    Audit,
    /// A connection to a source was lost or regained.
    Comms,
    /// An event a source raised itself (an OPC UA event or alarm of a PLC).
    Source,
}

impl EventKind {
    /// All kinds, in a stable order.
    pub const ALL: [EventKind; 8] = [
        EventKind::StateChange,
        EventKind::Alarm,
        EventKind::Anomaly,
        EventKind::Acknowledgement,
        EventKind::Report,
        EventKind::Audit,
        EventKind::Comms,
        EventKind::Source,
    ];

    /// The name used in files, the API and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::StateChange => "state_change",
            EventKind::Alarm => "alarm",
            EventKind::Anomaly => "anomaly",
            EventKind::Acknowledgement => "acknowledgement",
            EventKind::Report => "report",
            EventKind::Audit => "audit",
            EventKind::Comms => "comms",
            EventKind::Source => "source",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| format!("unknown event kind `{s}`"))
    }
}
