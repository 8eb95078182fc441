//! Analytics over the line's data (issue 5): streaming anomaly detection
//! (univariate robust baselines, multivariate PCA per asset group) and its
//! evaluation on public data; line state, OEE and alarms come next.

pub mod detect;
pub mod eval;
pub mod pca;
