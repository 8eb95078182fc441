//! The site and its plant model: `[site]`, `[[area]]`, `[[line]]`, `[[asset]]`, `[[tag]]`.

use serde::{Deserialize, Deserializer};

use crate::config::address::TagAddress;
use crate::config::alarms::{CommsLossConfig, FaultCodeConfig, FlatlineConfig, LimitPriorities, RateOfChangeConfig};
use crate::config::units::HumanDuration;
use crate::domain::ValueKind;

/// `[site]`: the plant as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Name of the plant, shown in reports and the web UI.
    pub name: String,
    /// IANA time zone of the plant (`Asia/Shanghai`, `Europe/Berlin`, `UTC`); used
    /// only at the edges (shift calendar, report text).
    #[serde(default = "default_time_zone", deserialize_with = "de_time_zone")]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

fn de_time_zone<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if is_time_zone_name(&s) {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(format!("`{s}` is not an IANA time zone name such as `Europe/Berlin` or `UTC`")))
    }
}

/// `UTC`, or `Area/City[/More]` with each part starting with a capital letter and made
/// of letters, digits, `_`, `+` and `-` (the shape of IANA names; no tz database needed).
fn is_time_zone_name(s: &str) -> bool {
    if s == "UTC" {
        return true;
    }
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            p.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'))
        })
}

/// `[[area]]`: a hall or department that groups lines.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaConfig {
    /// Identifier lines refer to (`area = "..."`).
    pub id: String,
    /// Human name.
    pub name: String,
}

/// `[[line]]`: a production line in an area.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Identifier assets refer to (`line = "..."`).
    pub id: String,
    /// Human name.
    pub name: String,
    /// The `[[area]]` id this line belongs to.
    pub area: String,
}

/// `[[asset]]`: a machine on a line; the unit agents and analytics speak in.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// Identifier tags refer to (`asset = "..."`).
    pub id: String,
    /// Human name, e.g. `Filler 2`.
    pub name: String,
    /// The `[[line]]` id this asset stands on.
    pub line: String,
    /// Machine type (`filler`, `capper`, `washer`...); ties to failure modes,
    /// service intervals and alarm templates.
    pub kind: String,
    /// Design speed in units per minute, the basis of OEE performance.
    #[serde(default)]
    pub ideal_rate_per_min: Option<f64>,
    /// Free text for people and agents.
    #[serde(default)]
    pub description: Option<String>,
}

/// `[[tag]]`: one signal, where it comes from and what it means.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    /// Unique name, e.g. `filler.bowl_pressure`; the series name in the store.
    pub name: String,
    /// The `[[asset]]` id this signal belongs to.
    pub asset: String,
    /// The `[[source]]` id it is read from; none for tags written through the API.
    #[serde(default)]
    pub source: Option<String>,
    /// Where the value sits in the source, in the source's protocol (checked
    /// against the source's kind when the config loads; required with `source`).
    #[serde(skip)]
    pub address: Option<TagAddress>,
    /// Engineering unit (`bar`, `rpm`, `1/min`); empty for states and flags.
    #[serde(default)]
    pub unit: String,
    /// What the signal means, for people and agents.
    pub description: String,
    /// Type of the values: `f64` (default), `i64`, `bool` or `string`.
    #[serde(default = "default_value_type", deserialize_with = "de_value_type")]
    pub value_type: ValueKind,
    /// Limit alarms for number tags (HH/H/L/LL with deadband, delays, priorities).
    #[serde(default)]
    pub limits: Option<TagLimits>,
    /// Rate-of-change alarm for number tags.
    #[serde(default)]
    pub rate_of_change: Option<RateOfChangeConfig>,
    /// Flatline (stuck sensor) alarm for number tags.
    #[serde(default)]
    pub flatline: Option<FlatlineConfig>,
    /// Comms-loss alarm: bad quality (or silence) for a while.
    #[serde(default)]
    pub comms_loss: Option<CommsLossConfig>,
    /// Fault-code alarm for integer and bool tags: active while the value is not 0.
    #[serde(default)]
    pub fault_code: Option<FaultCodeConfig>,
    /// The allowed values of a `string` tag that enumerates states
    /// (e.g. `["running", "idle", "fault"]`).
    #[serde(default)]
    pub states: Option<Vec<String>>,
    /// Absolute deadband of a number tag, in its unit: a new value is kept only when
    /// it differs from the last kept one by more than this; a change of quality is
    /// always kept. An OPC UA server applies it (a DataChangeFilter); for Modbus, MQTT
    /// and polled OPC UA nodes the gateway does.
    #[serde(default)]
    pub deadband: Option<f64>,
    /// OPC UA only: deadband in percent of the node's `EURange`, applied by the server.
    #[serde(default)]
    pub deadband_percent: Option<f64>,
    /// OPC UA only: how often the server samples this node (the source's
    /// `sampling_interval` when left out).
    #[serde(default)]
    pub sampling_interval: Option<HumanDuration>,
}

fn default_value_type() -> ValueKind {
    ValueKind::F64
}

fn de_value_type<'de, D: Deserializer<'de>>(d: D) -> Result<ValueKind, D::Error> {
    const NAMES: &[&str] = &["f64", "i64", "bool", "string"];
    let s = String::deserialize(d)?;
    match s.as_str() {
        "f64" => Ok(ValueKind::F64),
        "i64" => Ok(ValueKind::I64),
        "bool" => Ok(ValueKind::Bool),
        "string" => Ok(ValueKind::Str),
        _ => Err(serde::de::Error::unknown_variant(&s, NAMES)),
    }
}

/// Alarm limits of a number tag; any may be left out, those given must satisfy
/// `hh >= h >= l >= ll`. A high alarm is active while the value is above its
/// limit and clears once it is back below `limit - deadband` (low alarms mirror it).
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagLimits {
    /// `false` switches off limit alarms a template gave this tag.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// High-high (trip) limit.
    #[serde(default)]
    pub hh: Option<f64>,
    /// High (warning) limit.
    #[serde(default)]
    pub h: Option<f64>,
    /// Low (warning) limit.
    #[serde(default)]
    pub l: Option<f64>,
    /// Low-low (trip) limit.
    #[serde(default)]
    pub ll: Option<f64>,
    /// Hysteresis: a limit alarm clears only once the value is back by this much.
    #[serde(default)]
    pub deadband: Option<f64>,
    /// The limit must stay exceeded this long before the alarm (default 0).
    #[serde(default)]
    pub on_delay: Option<HumanDuration>,
    /// The value must stay back (past the deadband) this long before the alarm clears (default 0).
    #[serde(default)]
    pub off_delay: Option<HumanDuration>,
    /// Priority per limit (default: `hh` and `ll` high, `h` and `l` medium).
    #[serde(default)]
    pub priority: Option<LimitPriorities>,
}

impl TagLimits {
    /// Checks the order of the limits; problems come back as (key, message), on the
    /// lower-ranked limit of each pair out of order.
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        let ranked = [("hh", self.hh), ("h", self.h), ("l", self.l), ("ll", self.ll)];
        for (key, v) in ranked.iter().chain([("deadband", self.deadband)].iter()) {
            if let Some(v) = v {
                if !v.is_finite() {
                    errs.push((*key, format!("{key} must be a finite number, not {v}")));
                }
            }
        }
        let present: Vec<(&'static str, f64)> =
            ranked.iter().filter_map(|(k, v)| v.filter(|v| v.is_finite()).map(|v| (*k, v))).collect();
        for pair in present.windows(2) {
            let ((hk, hv), (lk, lv)) = (pair[0], pair[1]);
            if lv > hv {
                errs.push((lk, format!("{lk} ({lv}) is above {hk} ({hv}); limits must satisfy hh >= h >= l >= ll")));
            }
        }
        if let Some(d) = self.deadband {
            if d < 0.0 {
                errs.push(("deadband", format!("deadband ({d}) must not be negative")));
            }
        }
        errs
    }
}

/// Identifiers: letters, digits, `_`, `-`, `.`.
pub(crate) fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(format!("`{s}` contains {c:?}; use letters, digits, `_`, `-` and `.`"));
    }
    Ok(())
}

/// Tag names: letters, digits, `_`, `-`, `.`, `:`, `/`.
pub(crate) fn check_tag_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'))) {
        return Err(format!("`{s}` contains {c:?}; use letters, digits, `_`, `-`, `.`, `:` and `/`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones() {
        for ok in ["UTC", "Asia/Shanghai", "America/Argentina/Buenos_Aires", "Etc/GMT+8", "America/Port-au-Prince"] {
            assert!(is_time_zone_name(ok), "{ok}");
        }
        for bad in ["", "utc", "Shanghai", "asia/shanghai", "Asia/", "Asia Shanghai", "+08:00", "CET"] {
            assert!(!is_time_zone_name(bad), "{bad}");
        }
    }

    #[test]
    fn limits_order() {
        let ok = TagLimits {
            hh: Some(4.5),
            h: Some(4.0),
            l: Some(2.5),
            ll: Some(2.0),
            deadband: Some(0.05),
            ..Default::default()
        };
        assert!(ok.check().is_empty());
        let gap = TagLimits { hh: Some(4.5), ll: Some(2.0), ..Default::default() };
        assert!(gap.check().is_empty());
        let bad = TagLimits {
            hh: Some(4.0),
            h: Some(4.5),
            l: Some(1.0),
            ll: Some(2.0),
            deadband: Some(-1.0),
            ..Default::default()
        };
        let keys: Vec<&str> = bad.check().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["h", "ll", "deadband"]);
    }
}
