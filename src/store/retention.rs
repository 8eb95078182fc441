//! Retention: which sealed files to delete, by age and by disk budget.
//! Only sealed files are ever deleted, so data that is still in the WAL or
//! the head (not yet in a block) can never be dropped by retention.

use super::paths::BlockId;
use crate::domain::Timestamp;

/// A sealed file as retention sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct FileInfo {
    /// Its id.
    pub id: BlockId,
    /// Its latest timestamp.
    pub max_ts: Timestamp,
    /// Size on disk.
    pub bytes: u64,
}

/// The limits.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Raw blocks whose newest sample is older than this (ns) go.
    pub raw_max_age: i64,
    /// Rollup files whose newest minute is older than this (ns) go.
    pub rollup_max_age: i64,
    /// Total bytes of blocks + rollups allowed.
    pub disk_budget: u64,
}

/// What to delete.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Raw blocks to delete.
    pub blocks: Vec<BlockId>,
    /// Rollup files to delete.
    pub rollups: Vec<BlockId>,
}

/// Decides deletions: first by age, then — while over budget — the oldest raw
/// blocks (by newest sample), and only when no raw block is left, the oldest rollups.
pub fn plan(now: Timestamp, policy: &Policy, blocks: &[FileInfo], rollups: &[FileInfo]) -> Plan {
    let mut plan = Plan::default();
    let raw_cut = now.saturating_sub(policy.raw_max_age);
    let rollup_cut = now.saturating_sub(policy.rollup_max_age);
    let mut b: Vec<&FileInfo> = blocks.iter().collect();
    let mut r: Vec<&FileInfo> = rollups.iter().collect();
    b.sort_by_key(|f| (f.max_ts, f.id));
    r.sort_by_key(|f| (f.max_ts, f.id));
    let mut total: u64 = b.iter().chain(r.iter()).map(|f| f.bytes).sum();
    b.retain(|f| {
        if f.max_ts < raw_cut {
            plan.blocks.push(f.id);
            total -= f.bytes;
            false
        } else {
            true
        }
    });
    r.retain(|f| {
        if f.max_ts < rollup_cut {
            plan.rollups.push(f.id);
            total -= f.bytes;
            false
        } else {
            true
        }
    });
    let mut bi = b.into_iter();
    while total > policy.disk_budget {
        match bi.next() {
            Some(f) => {
                plan.blocks.push(f.id);
                total -= f.bytes;
            }
            None => break,
        }
    }
    let mut ri = r.into_iter();
    while total > policy.disk_budget {
        match ri.next() {
            Some(f) => {
                plan.rollups.push(f.id);
                total -= f.bytes;
            }
            None => break,
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: u64, max_ts: i64, bytes: u64) -> FileInfo {
        FileInfo { id: BlockId(id), max_ts, bytes }
    }

    #[test]
    fn age_then_budget_oldest_first_rollups_last() {
        let p = Policy { raw_max_age: 100, rollup_max_age: 1000, disk_budget: 250 };
        let blocks = [f(1, 10, 100), f(2, 950, 100), f(3, 990, 100)];
        let rollups = [f(1, 10, 10), f(2, 950, 10), f(3, 990, 10)];
        let plan = plan(1000, &p, &blocks, &rollups);
        // block 1 by age; then 310 - 100 = 210 <= 250, so nothing else.
        assert_eq!(plan.blocks, vec![BlockId(1)]);
        assert!(plan.rollups.is_empty());

        let tight = Policy { disk_budget: 25, ..p };
        let plan = super::plan(1000, &tight, &blocks, &rollups);
        assert_eq!(plan.blocks, vec![BlockId(1), BlockId(2), BlockId(3)]);
        assert_eq!(plan.rollups, vec![BlockId(1)]);
    }
}
