//! The head: acknowledged samples not yet sealed into a block, in memory and
//! queryable the moment the WAL has made them durable.

use super::points::{Column, Points};
use crate::domain::{Sample, SeriesId, Timestamp, Value};

/// Heap bytes of a series' vectors, without the text of string values:
/// what `Points::heap_bytes` counts, minus a walk over every string, which
/// made each push cost as much as the series held.
#[inline]
fn vec_bytes(p: &Points) -> usize {
    let values = match &p.values {
        Column::F64(c) => c.capacity() * 8,
        Column::I64(c) => c.capacity() * 8,
        Column::Bool(c) => c.capacity(),
        Column::Str(c) => c.capacity() * 24,
    };
    p.ts.capacity() * 8 + values + p.quality.capacity() * 4
}

/// In-memory samples of every series since the last seal.
#[derive(Default)]
pub struct Head {
    series: Vec<Option<Points>>,
    bytes: usize,
    samples: u64,
    min_ts: Option<Timestamp>,
    max_ts: Option<Timestamp>,
}

impl Head {
    /// Applies a durable batch. The engine has already checked kinds against
    /// the catalog; a sample whose kind does not fit is skipped and counted.
    pub fn apply(&mut self, batch: &[Sample], kind_of: impl Fn(SeriesId) -> Option<crate::domain::ValueKind>) -> usize {
        let mut skipped = 0;
        for s in batch {
            let i = s.series.0 as usize;
            if i >= self.series.len() {
                self.series.resize_with(i + 1, || None);
            }
            let slot = &mut self.series[i];
            if slot.is_none() {
                match kind_of(s.series) {
                    Some(k) => *slot = Some(Points::new(k)),
                    None => {
                        skipped += 1;
                        continue;
                    }
                }
            }
            let Some(p) = slot.as_mut() else { continue };
            let before = vec_bytes(p);
            if !p.push(s.ts, &s.value, s.quality) {
                skipped += 1;
                continue;
            }
            let after = vec_bytes(p);
            // The copy of a string value is allocated to its length.
            let text = match &s.value {
                Value::Str(t) => t.len(),
                _ => 0,
            };
            self.bytes = self.bytes + after - before.min(after) + text;
            self.samples += 1;
            self.min_ts = Some(self.min_ts.map_or(s.ts, |m| m.min(s.ts)));
            self.max_ts = Some(self.max_ts.map_or(s.ts, |m| m.max(s.ts)));
        }
        skipped
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Samples held.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Time span of the samples held (max - min), 0 when empty.
    pub fn span(&self) -> i64 {
        match (self.min_ts, self.max_ts) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        }
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// The points of one series, if any.
    pub fn series(&self, id: SeriesId) -> Option<&Points> {
        self.series.get(id.0 as usize).and_then(|s| s.as_ref())
    }

    /// Every series with points, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (SeriesId, &Points)> {
        self.series
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|p| !p.is_empty()).map(|p| (SeriesId(i as u32), p)))
    }
}
