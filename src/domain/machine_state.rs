use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a machine is doing, in the words of OEE: running makes product; every
/// other state is a loss (or, in a break, planned).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineState {
    /// Producing.
    Running,
    /// Ready, not producing, with no other reason known.
    Idle,
    /// Waiting for material from upstream.
    Starved,
    /// Its outfeed is full: waiting for downstream.
    Blocked,
    /// Stopped by a fault.
    Fault,
    /// Changeover, cleaning or adjustment.
    Setup,
    /// No trustworthy data (before the first sample, or a bad-quality sample).
    Unknown,
}

impl MachineState {
    /// All states, in a stable order.
    pub const ALL: [MachineState; 7] = [
        MachineState::Running,
        MachineState::Idle,
        MachineState::Starved,
        MachineState::Blocked,
        MachineState::Fault,
        MachineState::Setup,
        MachineState::Unknown,
    ];

    /// The name used in config, events, the API and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            MachineState::Running => "running",
            MachineState::Idle => "idle",
            MachineState::Starved => "starved",
            MachineState::Blocked => "blocked",
            MachineState::Fault => "fault",
            MachineState::Setup => "setup",
            MachineState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MachineState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MachineState::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = MachineState::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown machine state `{s}`, expected one of {}", names.join(", "))
        })
    }
}
