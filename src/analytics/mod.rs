//! Analytics over the line's data (issue 5): streaming anomaly detection so
//! far; line state, OEE and alarms come next.

pub mod alarms;
pub mod detect;
