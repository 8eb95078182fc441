use std::fmt;

use serde::{Deserialize, Serialize};

/// Dense numeric identity of a series inside one store (assigned on first
/// write, persisted in the series catalog, never reused).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeriesId(pub u32);

impl fmt::Display for SeriesId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The name of a series as people and protocols know it: a tag name such as
/// `filler.bowl_pressure`, or `measurement.field` from line protocol, plus
/// optional labels (`line=1`). Labels are kept sorted by key so that the same
/// set of labels always gives the same key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Series name.
    pub name: String,
    /// Label pairs, sorted by key, keys unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(String, String)>,
}

impl SeriesKey {
    /// A key without labels.
    pub fn new(name: impl Into<String>) -> Self {
        SeriesKey { name: name.into(), labels: Vec::new() }
    }

    /// A key with labels; they are sorted and a repeated key keeps its last value.
    pub fn with_labels(name: impl Into<String>, mut labels: Vec<(String, String)>) -> Self {
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                std::mem::swap(&mut earlier.1, &mut later.1);
                true
            } else {
                false
            }
        });
        SeriesKey { name: name.into(), labels }
    }

    /// True when every `(k, v)` in `wanted` is among this key's labels.
    pub fn matches_labels(&self, wanted: &[(String, String)]) -> bool {
        wanted.iter().all(|(k, v)| {
            self.labels.binary_search_by(|(lk, _)| lk.as_str().cmp(k)).map(|i| &self.labels[i].1 == v).unwrap_or(false)
        })
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_and_last_repeat_wins() {
        let k = SeriesKey::with_labels(
            "m.f",
            vec![("z".into(), "1".into()), ("a".into(), "2".into()), ("z".into(), "3".into())],
        );
        assert_eq!(k.to_string(), "m.f{a=2,z=3}");
        assert!(k.matches_labels(&[("z".into(), "3".into())]));
        assert!(!k.matches_labels(&[("z".into(), "1".into())]));
    }
}
