//! Turning external formats into samples: InfluxDB line protocol (the write
//! API and `linepilot import`) and CSV `series,ts,value` rows.
//!
//! A line-protocol point `m,k=v f=1.5 ts` becomes series `m.f` with label
//! `k=v`. New series are created in one catalog call per batch; a type
//! conflict or a syntax error rejects the whole batch with its line number.

use std::collections::HashMap;

use thiserror::Error;

use super::catalog::canonical;
use super::{Store, StoreError};
use crate::domain::{Quality, Sample, SeriesId, SeriesKey, Timestamp, Value, ValueKind};
use crate::line_protocol::{self, FieldValue, LineError, Precision};

/// Why a batch was refused.
#[derive(Debug, Error)]
pub enum ImportError {
    /// A line could not be parsed or its value does not fit its series.
    #[error(transparent)]
    Line(#[from] LineError),
    /// The store refused the batch.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Samples ready for [`Store::write`], with their series resolved.
pub struct Resolved {
    /// The samples.
    pub samples: Vec<Sample>,
    /// Series created by this batch.
    pub new_series: usize,
}

const PENDING: u32 = u32::MAX;

struct Builder<'s> {
    store: &'s Store,
    samples: Vec<Sample>,
    /// For samples of new series: (sample index, pending key index).
    patches: Vec<(usize, usize)>,
    pending: Vec<(SeriesKey, ValueKind)>,
    pending_idx: HashMap<String, usize>,
    key: String,
}

impl<'s> Builder<'s> {
    fn new(store: &'s Store) -> Self {
        Builder {
            store,
            samples: Vec::new(),
            patches: Vec::new(),
            pending: Vec::new(),
            pending_idx: HashMap::new(),
            key: String::new(),
        }
    }

    /// Adds one sample of the series named by `self.key` (already canonical).
    /// `coerce` lets integer values into float series (CSV has no int/float syntax).
    fn add(
        &mut self,
        make_key: impl FnOnce() -> SeriesKey,
        ts: Timestamp,
        mut value: Value,
        coerce: bool,
    ) -> Result<(), String> {
        let kind = value.kind();
        let id = match self.store.catalog().lookup_canonical(&self.key) {
            Some((id, k)) => {
                value = fit(value, k, coerce).map_err(|got| conflict(&self.key, k, got))?;
                id
            }
            None => match self.pending_idx.get(self.key.as_str()) {
                Some(&i) => {
                    let k = self.pending[i].1;
                    value = fit(value, k, coerce).map_err(|got| conflict(&self.key, k, got))?;
                    self.patches.push((self.samples.len(), i));
                    SeriesId(PENDING)
                }
                None => {
                    // CSV has no integer syntax: a number creates a float
                    // series (an existing integer series still takes integers).
                    let kind = match (&value, coerce) {
                        (Value::I64(i), true) => {
                            value = Value::F64(*i as f64);
                            ValueKind::F64
                        }
                        _ => kind,
                    };
                    self.pending_idx.insert(self.key.clone(), self.pending.len());
                    self.patches.push((self.samples.len(), self.pending.len()));
                    self.pending.push((make_key(), kind));
                    SeriesId(PENDING)
                }
            },
        };
        self.samples.push(Sample { series: id, ts, value, quality: Quality::GOOD });
        Ok(())
    }

    fn finish(mut self) -> Result<Resolved, StoreError> {
        let new_series = self.pending.len();
        if new_series > 0 {
            let ids = self.store.resolve(&self.pending)?;
            for (si, pi) in self.patches {
                self.samples[si].series = ids[pi];
            }
        }
        Ok(Resolved { samples: self.samples, new_series })
    }
}

fn fit(v: Value, kind: ValueKind, coerce: bool) -> Result<Value, ValueKind> {
    match (v, kind) {
        (v, k) if v.kind() == k => Ok(v),
        (Value::I64(i), ValueKind::F64) if coerce => Ok(Value::F64(i as f64)),
        (v, _) => Err(v.kind()),
    }
}

fn conflict(key: &str, existing: ValueKind, got: ValueKind) -> String {
    let shown: String = key.replace('\u{1f}', ",").replace('\u{1e}', "=");
    format!("field type conflict: series `{shown}` holds {existing} values, this line has {got}")
}

/// Parses a line-protocol body into resolved samples. Points without a
/// timestamp get `now`. Nothing is written.
pub fn line_protocol(store: &Store, body: &str, precision: Precision, now: Timestamp) -> Result<Resolved, ImportError> {
    let mut b = Builder::new(store);
    let mut name = String::new();
    line_protocol::for_each_point_ref(body, precision, |p| {
        let ts = p.timestamp.unwrap_or(now);
        // Labels once per point, normalized as `SeriesKey::with_labels` does
        // (sorted by key, a repeated key keeps its last value).
        let mut tags: Vec<(&str, &str)> = p.tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
        if tags.windows(2).any(|w| w[0].0 >= w[1].0) {
            tags.sort_by(|a, b| a.0.cmp(b.0));
            tags.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    *earlier = *later;
                }
                same
            });
        }
        for (field, fv) in &p.fields {
            name.clear();
            name.push_str(&p.measurement);
            name.push('.');
            name.push_str(field);
            canonical(&name, &tags, &mut b.key);
            let value = match fv {
                FieldValue::F64(v) => Value::F64(*v),
                FieldValue::I64(v) => Value::I64(*v),
                FieldValue::U64(v) => {
                    Value::I64(i64::try_from(*v).map_err(|_| format!("unsigned value {v} is out of range"))?)
                }
                FieldValue::Bool(v) => Value::Bool(*v),
                FieldValue::Str(s) => Value::Str(s.to_string()),
            };
            let labels = || {
                SeriesKey::with_labels(
                    name.clone(),
                    p.tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                )
            };
            b.add(labels, ts, value, false)?;
        }
        Ok(())
    })?;
    Ok(b.finish()?)
}

/// Parses CSV `series,ts,value` rows (header optional) into resolved samples;
/// `first_line` numbers the first row in errors.
pub fn csv(store: &Store, rows: &str, first_line: usize) -> Result<Resolved, ImportError> {
    let mut b = Builder::new(store);
    for (i, line) in rows.lines().enumerate() {
        let at = |column: usize, message: String| LineError { line: first_line + i, column, message };
        let Some(row) = line_protocol::parse_csv_row(line).map_err(|(c, m)| at(c, m))? else { continue };
        let empty: [(&str, &str); 0] = [];
        canonical(&row.series, &empty, &mut b.key);
        let series = row.series.to_string();
        b.add(|| SeriesKey::new(series), row.ts, row.value, true).map_err(|m| at(1, m))?;
    }
    Ok(b.finish()?)
}
