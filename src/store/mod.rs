//! The embedded time-series store: WAL -> head -> blocks -> rollups, with
//! retention, recovery, queries, a series catalog and an event log.
//!
//! Stages depend in one direction: `wal` knows only records; `head` knows
//! points; `block` knows codecs and points; `engine` ties them together.

pub mod block;
pub mod catalog;
pub mod codec;
pub mod config;
mod engine;
pub mod events;
mod head;
pub mod import;
pub mod paths;
pub mod points;
pub mod retention;
pub mod rollup;
pub mod wal;

pub use engine::{Clock, Latest, Store, StoreArgs, StoreError, StoreStats, SystemClock};
