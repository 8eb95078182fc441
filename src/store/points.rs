//! `Points`: one series' samples as columns (timestamps, values, qualities).
//! The head keeps one per series; queries and the block writer exchange them.

use crate::domain::{Quality, Timestamp, Value, ValueKind};

/// A value column of one kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    /// Floats.
    F64(Vec<f64>),
    /// Integers.
    I64(Vec<i64>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Strings.
    Str(Vec<String>),
}

impl Column {
    /// An empty column of `kind`.
    pub fn new(kind: ValueKind) -> Column {
        match kind {
            ValueKind::F64 => Column::F64(Vec::new()),
            ValueKind::I64 => Column::I64(Vec::new()),
            ValueKind::Bool => Column::Bool(Vec::new()),
            ValueKind::Str => Column::Str(Vec::new()),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> ValueKind {
        match self {
            Column::F64(_) => ValueKind::F64,
            Column::I64(_) => ValueKind::I64,
            Column::Bool(_) => ValueKind::Bool,
            Column::Str(_) => ValueKind::Str,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Column::F64(v) => v.len(),
            Column::I64(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::Str(v) => v.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `v`; false (and nothing appended) when its kind differs.
    #[inline]
    pub fn push(&mut self, v: &Value) -> bool {
        match (self, v) {
            (Column::F64(c), Value::F64(x)) => c.push(*x),
            (Column::I64(c), Value::I64(x)) => c.push(*x),
            (Column::Bool(c), Value::Bool(x)) => c.push(*x),
            (Column::Str(c), Value::Str(x)) => c.push(x.clone()),
            _ => return false,
        }
        true
    }

    /// The value at `i`.
    pub fn get(&self, i: usize) -> Value {
        match self {
            Column::F64(c) => Value::F64(c[i]),
            Column::I64(c) => Value::I64(c[i]),
            Column::Bool(c) => Value::Bool(c[i]),
            Column::Str(c) => Value::Str(c[i].clone()),
        }
    }

    /// The value at `i` as a number (None for strings).
    #[inline]
    pub fn num(&self, i: usize) -> Option<f64> {
        match self {
            Column::F64(c) => Some(c[i]),
            Column::I64(c) => Some(c[i] as f64),
            Column::Bool(c) => Some(c[i] as u8 as f64),
            Column::Str(_) => None,
        }
    }

    fn slice(&self, r: std::ops::Range<usize>) -> Column {
        match self {
            Column::F64(c) => Column::F64(c[r].to_vec()),
            Column::I64(c) => Column::I64(c[r].to_vec()),
            Column::Bool(c) => Column::Bool(c[r].to_vec()),
            Column::Str(c) => Column::Str(c[r].to_vec()),
        }
    }

    fn permute(&self, idx: &[usize]) -> Column {
        match self {
            Column::F64(c) => Column::F64(idx.iter().map(|&i| c[i]).collect()),
            Column::I64(c) => Column::I64(idx.iter().map(|&i| c[i]).collect()),
            Column::Bool(c) => Column::Bool(idx.iter().map(|&i| c[i]).collect()),
            Column::Str(c) => Column::Str(idx.iter().map(|&i| c[i].clone()).collect()),
        }
    }

    fn extend(&mut self, other: &Column) {
        match (self, other) {
            (Column::F64(a), Column::F64(b)) => a.extend_from_slice(b),
            (Column::I64(a), Column::I64(b)) => a.extend_from_slice(b),
            (Column::Bool(a), Column::Bool(b)) => a.extend_from_slice(b),
            (Column::Str(a), Column::Str(b)) => a.extend_from_slice(b),
            _ => {}
        }
    }

    /// Heap bytes used, roughly.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Column::F64(c) => c.capacity() * 8,
            Column::I64(c) => c.capacity() * 8,
            Column::Bool(c) => c.capacity(),
            Column::Str(c) => c.capacity() * 24 + c.iter().map(|s| s.capacity()).sum::<usize>(),
        }
    }
}

/// Samples of one series as columns. `quality` is empty while every sample is
/// good (the common case costs nothing), else as long as `ts`.
#[derive(Clone, Debug, PartialEq)]
pub struct Points {
    /// Timestamps, UTC ns.
    pub ts: Vec<Timestamp>,
    /// Values.
    pub values: Column,
    /// Quality codes, or empty when all are good.
    pub quality: Vec<u32>,
    /// True while `ts` is non-decreasing.
    pub sorted: bool,
}

impl Points {
    /// Empty points of `kind`.
    pub fn new(kind: ValueKind) -> Points {
        Points { ts: Vec::new(), values: Column::new(kind), quality: Vec::new(), sorted: true }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Quality of sample `i`.
    #[inline]
    pub fn quality_at(&self, i: usize) -> Quality {
        Quality(self.quality.get(i).copied().unwrap_or(0))
    }

    /// Appends one sample; false when the value's kind does not fit.
    #[inline]
    pub fn push(&mut self, ts: Timestamp, v: &Value, q: Quality) -> bool {
        if !self.values.push(v) {
            return false;
        }
        if let Some(&last) = self.ts.last() {
            if ts < last {
                self.sorted = false;
            }
        }
        self.ts.push(ts);
        if q.0 != 0 || !self.quality.is_empty() {
            // The first non-good sample materialises the column: zeros
            // (good) for every earlier sample, then its own code -- also
            // when it is the very first sample.
            self.quality.resize(self.ts.len() - 1, 0);
            self.quality.push(q.0);
        }
        true
    }

    /// Appends all of `other` (same kind).
    pub fn extend(&mut self, other: &Points) {
        if other.is_empty() {
            return;
        }
        if let (Some(&a), Some(&b)) = (self.ts.last(), other.ts.first()) {
            if b < a {
                self.sorted = false;
            }
        }
        self.sorted &= other.sorted;
        if !other.quality.is_empty() || !self.quality.is_empty() {
            // Materialise the column (zeros for every earlier sample) even
            // when `self` is still empty, so `other`'s codes are never lost.
            self.quality.resize(self.ts.len(), 0);
            if other.quality.is_empty() {
                self.quality.extend(std::iter::repeat_n(0, other.len()));
            } else {
                self.quality.extend_from_slice(&other.quality);
            }
        }
        self.ts.extend_from_slice(&other.ts);
        self.values.extend(&other.values);
    }

    /// Sorts by time (stable) and keeps the last written sample of each timestamp.
    pub fn normalize(&mut self) {
        let dup = self.sorted && self.ts.windows(2).any(|w| w[0] == w[1]);
        if self.sorted && !dup {
            return;
        }
        let mut idx: Vec<usize> = (0..self.ts.len()).collect();
        if !self.sorted {
            idx.sort_by_key(|&i| self.ts[i]);
        }
        // keep the last index of each run of equal timestamps
        let mut keep = Vec::with_capacity(idx.len());
        for (j, &i) in idx.iter().enumerate() {
            if j + 1 < idx.len() && self.ts[idx[j + 1]] == self.ts[i] {
                continue;
            }
            keep.push(i);
        }
        self.ts = keep.iter().map(|&i| self.ts[i]).collect();
        self.values = self.values.permute(&keep);
        if !self.quality.is_empty() {
            self.quality = keep.iter().map(|&i| self.quality[i]).collect();
        }
        self.sorted = true;
    }

    /// The samples with `from <= ts < to`, normalized.
    pub fn range(&self, from: Timestamp, to: Timestamp) -> Points {
        if !self.sorted {
            let mut c = self.clone();
            c.normalize();
            return c.range(from, to);
        }
        let a = self.ts.partition_point(|&t| t < from);
        let b = self.ts.partition_point(|&t| t < to);
        let mut p = Points {
            ts: self.ts[a..b].to_vec(),
            values: self.values.slice(a..b),
            quality: if self.quality.is_empty() { Vec::new() } else { self.quality[a..b].to_vec() },
            sorted: true,
        };
        p.normalize();
        p
    }

    /// Heap bytes used, roughly.
    pub fn heap_bytes(&self) -> usize {
        self.ts.capacity() * 8 + self.values.heap_bytes() + self.quality.capacity() * 4
    }

    /// Merges sorted point sets where later sets win on equal timestamps.
    pub fn merge(kind: ValueKind, parts: Vec<Points>) -> Points {
        let mut nonempty: Vec<Points> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        match nonempty.len() {
            0 => Points::new(kind),
            1 => {
                let mut p = nonempty.pop().unwrap_or_else(|| Points::new(kind));
                p.normalize();
                p
            }
            _ => {
                // Concatenate in priority order; a stable sort then keeps the
                // later part last among equal timestamps, and normalize keeps it.
                let mut all = Points::new(kind);
                for p in &nonempty {
                    all.extend(p);
                }
                all.normalize();
                all
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_sorts_and_last_write_wins() {
        let mut p = Points::new(ValueKind::F64);
        for (t, v) in [(3, 3.0), (1, 1.0), (2, 2.0), (1, 1.5)] {
            p.push(t, &Value::F64(v), Quality::GOOD);
        }
        p.push(4, &Value::F64(4.0), Quality::BAD_COMMS);
        assert!(!p.push(5, &Value::I64(1), Quality::GOOD));
        p.normalize();
        assert_eq!(p.ts, vec![1, 2, 3, 4]);
        assert_eq!(p.values, Column::F64(vec![1.5, 2.0, 3.0, 4.0]));
        assert_eq!(p.quality, vec![0, 0, 0, Quality::BAD_COMMS.0]);
        let r = p.range(2, 4);
        assert_eq!(r.ts, vec![2, 3]);
    }

    #[test]
    fn quality_of_the_first_sample_and_first_part_is_kept() {
        let mut a = Points::new(ValueKind::F64);
        a.push(1, &Value::F64(1.0), Quality::BAD_COMMS);
        a.push(2, &Value::F64(2.0), Quality::GOOD);
        assert_eq!(a.quality, vec![Quality::BAD_COMMS.0, 0]);
        let mut b = Points::new(ValueKind::F64);
        b.push(3, &Value::F64(3.0), Quality::GOOD);
        let m = Points::merge(ValueKind::F64, vec![a.clone(), b.clone()]);
        assert_eq!(m.quality, vec![Quality::BAD_COMMS.0, 0, 0]);
        let m = Points::merge(ValueKind::F64, vec![b, a]);
        assert_eq!(m.ts, vec![1, 2, 3]);
        assert_eq!(m.quality, vec![Quality::BAD_COMMS.0, 0, 0]);
    }

    #[test]
    fn merge_prefers_later_parts() {
        let mut a = Points::new(ValueKind::I64);
        a.push(1, &Value::I64(10), Quality::GOOD);
        a.push(2, &Value::I64(20), Quality::GOOD);
        let mut b = Points::new(ValueKind::I64);
        b.push(2, &Value::I64(21), Quality::GOOD);
        b.push(3, &Value::I64(30), Quality::GOOD);
        let m = Points::merge(ValueKind::I64, vec![a, b]);
        assert_eq!(m.ts, vec![1, 2, 3]);
        assert_eq!(m.values, Column::I64(vec![10, 21, 30]));
    }
}
