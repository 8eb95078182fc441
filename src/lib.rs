//! linepilot: an edge agent gateway for factory lines.
//!
//! See `../shared/DESIGN.md` for the architecture. This file only declares the module tree.

pub mod agents;
pub mod analytics;
pub mod api;
pub mod config;
pub mod domain;
pub mod ingest;
pub mod line_protocol;
pub mod llm;
pub mod service;
pub mod store;
