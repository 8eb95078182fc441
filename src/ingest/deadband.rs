//! The gateway-side deadband: a number sample is kept only when it moved by
//! more than the tag's `deadband` since the last kept sample of that tag.
//!
//! It sits in a source's [`Sink`](super::Sink), so every sample the source sends
//! passes it, the bad-quality samples of a comms loss included: a change of
//! quality is always kept, and the first good value after a gap is kept
//! because its quality differs from the gap's.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::domain::{Quality, Sample, SeriesId, Value, ValueKind};

use super::BoundTag;

/// Per-series state of the tags of one source that have a deadband.
#[derive(Debug)]
pub struct Deadband {
    slots: HashMap<SeriesId, Slot>,
}

#[derive(Debug)]
struct Slot {
    band: f64,
    last: Option<(f64, Quality)>,
}

impl Deadband {
    /// The filter for the number tags of `tags`, each with its own deadband or
    /// else `default` (the source's); `None` when no tag has one (no cost then).
    pub fn for_tags(tags: &[BoundTag], default: Option<f64>) -> Option<Deadband> {
        let slots: HashMap<SeriesId, Slot> = tags
            .iter()
            .filter(|t| matches!(t.tag.value_type, ValueKind::F64 | ValueKind::I64))
            .filter_map(|t| {
                let band = t.tag.deadband.or(default).filter(|d| *d > 0.0)?;
                Some((t.series, Slot { band, last: None }))
            })
            .collect();
        (!slots.is_empty()).then_some(Deadband { slots })
    }

    /// Drops the samples that stay within their tag's deadband; returns how many.
    pub fn retain(&mut self, samples: &mut Vec<Sample>) -> u64 {
        let before = samples.len();
        samples.retain(|s| self.keep(s));
        (before - samples.len()) as u64
    }

    fn keep(&mut self, s: &Sample) -> bool {
        let Some(slot) = self.slots.get_mut(&s.series) else { return true };
        let x = match s.value {
            Value::F64(x) => x,
            Value::I64(x) => x as f64,
            // Only number tags get a deadband (checked at load).
            _ => return true,
        };
        let keep = match slot.last {
            None => true,
            Some((_, q)) if q != s.quality => true,
            // A bad sample carries no value to compare.
            Some(_) if !s.quality.is_good() => false,
            // Kept unless provably within the band (a NaN on either side is a change).
            Some((last, _)) => {
                !matches!((x - last).abs().partial_cmp(&slot.band), Some(Ordering::Less | Ordering::Equal))
            }
        };
        if keep {
            slot.last = Some((x, s.quality));
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TagConfig;

    fn tag(series: u32, deadband: Option<f64>) -> BoundTag {
        let text = "name = \"t\"\nasset = \"a\"\ndescription = \"d\"\n";
        let mut tag: TagConfig = toml::from_str(text).expect("tag");
        tag.value_type = ValueKind::F64;
        tag.deadband = deadband;
        BoundTag { tag, series: SeriesId(series) }
    }

    fn s(series: u32, ts: i64, x: f64, quality: Quality) -> Sample {
        Sample { series: SeriesId(series), ts, value: Value::F64(x), quality }
    }

    #[test]
    fn no_deadband_no_filter() {
        assert!(Deadband::for_tags(&[tag(1, None), tag(2, Some(0.0))], None).is_none());
    }

    #[test]
    fn keeps_moves_beyond_the_band_and_every_quality_change() {
        let mut db = Deadband::for_tags(&[tag(1, Some(0.5)), tag(2, None)], None).expect("filter");
        let g = Quality::GOOD;
        let mut v = vec![
            s(1, 1, 10.0, g),                 // first: kept
            s(1, 2, 10.4, g),                 // within 0.5 of 10.0: dropped
            s(1, 3, 10.5, g),                 // exactly the band: dropped (must exceed it)
            s(1, 4, 10.6, g),                 // kept, new reference 10.6
            s(1, 5, 10.2, g),                 // within 0.5 of 10.6: dropped
            s(2, 6, 1.0, g),                  // no deadband on series 2: kept
            s(2, 7, 1.0, g),                  // kept
            s(1, 8, 0.0, Quality::BAD_COMMS), // comms loss: kept
            s(1, 9, 0.0, Quality::BAD_COMMS), // still bad: dropped
            s(1, 10, 10.6, g),                // back, same value as before the gap: kept
            s(1, 11, 9.9, g),                 // kept (moved 0.7)
        ];
        assert_eq!(db.retain(&mut v), 4);
        let ts: Vec<i64> = v.iter().map(|s| s.ts).collect();
        assert_eq!(ts, [1, 4, 6, 7, 8, 10, 11]);
    }

    #[test]
    fn the_source_default_applies_to_tags_without_their_own() {
        let mut db = Deadband::for_tags(&[tag(1, None), tag(2, Some(5.0))], Some(1.0)).expect("filter");
        let g = Quality::GOOD;
        let mut v = vec![s(1, 1, 0.0, g), s(1, 2, 0.9, g), s(2, 3, 0.0, g), s(2, 4, 4.0, g), s(2, 5, 6.0, g)];
        db.retain(&mut v);
        assert_eq!(v.iter().map(|s| s.ts).collect::<Vec<_>>(), [1, 3, 5]);
    }

    #[test]
    fn nan_is_kept() {
        let mut db = Deadband::for_tags(&[tag(1, Some(1.0))], None).expect("filter");
        let mut v = vec![s(1, 1, 1.0, Quality::GOOD), s(1, 2, f64::NAN, Quality::GOOD), s(1, 3, 1.0, Quality::GOOD)];
        db.retain(&mut v);
        assert_eq!(v.len(), 3, "a NaN is not within any band, and the next value differs from NaN");
    }
}
