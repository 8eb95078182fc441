//! Analytics over the line's data (issue 5): streaming anomaly detection and its
//! evaluation on public data; line state, OEE and alarms come next.

pub mod alarms;
pub mod detect;
pub mod eval;
pub mod stage;
