//! `[store]` section of the config.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::units::{ByteSize, HumanDuration};

/// How and where the embedded time-series store keeps data.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory that holds the WAL, blocks, rollups, catalog and event log.
    /// `linepilot run --data-dir` overrides it.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Longest time a write waits to be grouped with others before the WAL is
    /// fsynced (group commit). A write is acknowledged only once durable.
    #[serde(default = "default_fsync_interval")]
    pub fsync_interval: HumanDuration,
    /// Largest span of time one block covers; the head is sealed into a block
    /// when its data spans this much.
    #[serde(default = "default_block_duration")]
    pub block_duration: HumanDuration,
    /// The memory the store may use (resident set of the whole store: head,
    /// sealing buffers, catalog). Writers are held back rather than exceed it.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    /// Memory the in-memory head may use before it is sealed into a block
    /// early; by default derived from `memory_limit` (half of what is left
    /// after a 64 MiB allowance for the rest of the process, since a head
    /// being sealed and a new one coexist).
    #[serde(default)]
    pub head_max_bytes: Option<ByteSize>,
    /// How long raw samples are kept.
    #[serde(default = "default_retention_raw")]
    pub retention_raw: HumanDuration,
    /// How long per-minute rollups are kept (longer than raw data).
    #[serde(default = "default_retention_rollup")]
    pub retention_rollup: HumanDuration,
    /// Disk the store may use for blocks and rollups; the oldest raw blocks go first.
    #[serde(default = "default_disk_budget")]
    pub disk_budget: ByteSize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: default_data_dir(),
            fsync_interval: default_fsync_interval(),
            block_duration: default_block_duration(),
            memory_limit: default_memory_limit(),
            head_max_bytes: None,
            retention_raw: default_retention_raw(),
            retention_rollup: default_retention_rollup(),
            disk_budget: default_disk_budget(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/linepilot")
}
fn default_fsync_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(50))
}
fn default_block_duration() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn default_memory_limit() -> ByteSize {
    ByteSize(256 * 1000 * 1000)
}

impl StoreConfig {
    /// The head size that triggers a seal: `head_max_bytes` if given, else
    /// derived from `memory_limit`.
    pub fn head_limit_bytes(&self) -> u64 {
        self.head_max_bytes
            .map(|b| b.0)
            .unwrap_or_else(|| self.memory_limit.0.saturating_sub(64 << 20) / 2)
            .max(1 << 20)
    }
}
fn default_retention_raw() -> HumanDuration {
    HumanDuration(Duration::from_secs(14 * 86_400))
}
fn default_retention_rollup() -> HumanDuration {
    HumanDuration(Duration::from_secs(400 * 86_400))
}
fn default_disk_budget() -> ByteSize {
    ByteSize(20 * 1000 * 1000 * 1000)
}
