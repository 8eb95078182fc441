//! The embedded time-series store: WAL -> head -> blocks -> rollups, with
//! retention, recovery, queries, a series catalog and an event log.

pub mod config;
pub mod events;
