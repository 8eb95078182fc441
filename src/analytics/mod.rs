//! Analytics over the line's data (issue 5): streaming anomaly detection
//! (univariate robust baselines, multivariate PCA per asset group), alarms
//! (ISA-18.2), machine state per asset, OEE / downtime / MTBF / MTTR per shift,
//! the daemon's analytics stage, remaining-useful-life estimation and
//! evaluation on public data.

pub mod alarms;
pub mod detect;
pub mod eval;
pub mod oee;
pub mod pca;
pub mod replay;
pub mod rul;
pub mod stage;
pub mod state;
