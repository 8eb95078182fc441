//! HTTP API (axum): InfluxDB v2 write endpoint, queries, health.

pub mod config;
