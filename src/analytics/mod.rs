//! Analytics over the line's data (issue 5): streaming anomaly detection, machine
//! state per asset, and OEE / downtime / MTBF / MTTR per shift; alarms come next.

pub mod detect;
pub mod oee;
pub mod state;
