//! The durable event log (SQLite).
