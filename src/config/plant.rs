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
    /// The line's key machine (DIN 8743: usually the filler), an `[[asset]]` id on this
    /// line: the line's OEE is this machine's. Left out: the asset with state and
    /// counters that has the lowest `ideal_rate_per_min` (the bottleneck by design).
    #[serde(default)]
    pub key_asset: Option<String>,
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
    /// How the machine's state (running, idle, starved, blocked, fault, setup) is
    /// derived: from a state tag, or by a rule over speed and fault code.
    #[serde(default)]
    pub state: Option<AssetStateConfig>,
    /// Which counter tags give its good, reject and total counts.
    #[serde(default)]
    pub counters: Option<AssetCountersConfig>,
}

/// `state` of an `[[asset]]`: either `tag` with `codes` (a PLC state word), or a rule
/// over `speed_tag` (running above `running_speed`), `fault_code_tag` (fault when not
/// 0) and the optional `starved_tag` / `blocked_tag` flags.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetStateConfig {
    /// A `[[tag]]` that holds the machine's state: a code (`i64`) or a name (`string`).
    #[serde(default)]
    pub tag: Option<String>,
    /// With `tag`: what each value means, `{ 0 = "idle", 1 = "running", 4 = "fault" }`
    /// (states: running, idle, starved, blocked, fault, setup, unknown). A value not
    /// listed reads as `unknown`.
    #[serde(default)]
    pub codes: std::collections::BTreeMap<String, crate::domain::MachineState>,
    /// A `[[tag]]` with the active fault code (0 = none): names the cause of a fault
    /// (`fault_101`); in a rule, any code but 0 means `fault`.
    #[serde(default)]
    pub fault_code_tag: Option<String>,
    /// Rule: a `[[tag]]` with the machine's speed.
    #[serde(default)]
    pub speed_tag: Option<String>,
    /// Rule: the machine runs while its speed is above this (in the speed tag's unit).
    #[serde(default)]
    pub running_speed: f64,
    /// Rule: a `bool` `[[tag]]` that is true while the machine waits for material.
    #[serde(default)]
    pub starved_tag: Option<String>,
    /// Rule: a `bool` `[[tag]]` that is true while its outfeed is full.
    #[serde(default)]
    pub blocked_tag: Option<String>,
}

impl AssetStateConfig {
    /// Every tag this config reads, with the key it is named under.
    pub fn tags(&self) -> Vec<(&'static str, &str)> {
        [
            ("tag", &self.tag),
            ("fault_code_tag", &self.fault_code_tag),
            ("speed_tag", &self.speed_tag),
            ("starved_tag", &self.starved_tag),
            ("blocked_tag", &self.blocked_tag),
        ]
        .into_iter()
        .filter_map(|(k, t)| t.as_deref().map(|t| (k, t)))
        .collect()
    }

    /// Problems as (key, message), keys relative to `state`.
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        match (&self.tag, &self.speed_tag) {
            (Some(_), Some(_)) => {
                errs.push(("speed_tag", "give `tag` (a state tag) or `speed_tag` (a rule), not both".into()))
            }
            (None, None) => errs.push(("tag", "give `tag` with `codes` (a state tag), or `speed_tag` (a rule)".into())),
            (Some(_), None) if self.codes.is_empty() => {
                errs.push(("codes", "a state tag needs `codes`, e.g. { 0 = \"idle\", 1 = \"running\" }".into()))
            }
            (None, Some(_)) if !self.codes.is_empty() => {
                errs.push(("codes", "`codes` applies to `tag`, not to a rule".into()))
            }
            _ => {}
        }
        if self.tag.is_some() && (self.starved_tag.is_some() || self.blocked_tag.is_some()) {
            errs.push(("starved_tag", "starved_tag and blocked_tag belong to a rule (`speed_tag`)".into()));
        }
        if !self.running_speed.is_finite() || self.running_speed < 0.0 {
            errs.push(("running_speed", format!("running_speed ({}) must be a number >= 0", self.running_speed)));
        }
        errs
    }
}

/// `counters` of an `[[asset]]`: counter tags (running totals that only go up, reset
/// or wrap) for its output. Give `good` and `reject`, `total` and `reject`, `total` and
/// `good`, or one of `good` / `total` alone (quality is then not known).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetCountersConfig {
    /// A `[[tag]]` counting good units.
    #[serde(default)]
    pub good: Option<String>,
    /// A `[[tag]]` counting rejected units.
    #[serde(default)]
    pub reject: Option<String>,
    /// A `[[tag]]` counting every unit made (good + reject).
    #[serde(default)]
    pub total: Option<String>,
    /// The counters' modulus when they wrap (4294967296 for a 32-bit counter): a drop
    /// from near the top is a wrap, not a reset. Without it every drop is a reset to 0.
    #[serde(default)]
    pub rollover: Option<u64>,
}

impl AssetCountersConfig {
    /// Every tag this config reads, with the key it is named under.
    pub fn tags(&self) -> Vec<(&'static str, &str)> {
        [("good", &self.good), ("reject", &self.reject), ("total", &self.total)]
            .into_iter()
            .filter_map(|(k, t)| t.as_deref().map(|t| (k, t)))
            .collect()
    }

    /// Problems as (key, message), keys relative to `counters`.
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        if self.good.is_none() && self.total.is_none() {
            errs.push(("good", "counters need `good` or `total`".into()));
        }
        if self.good.is_some() && self.reject.is_some() && self.total.is_some() {
            errs.push(("total", "give two of good, reject and total; the third follows".into()));
        }
        if self.rollover == Some(0) {
            errs.push(("rollover", "rollover must be more than 0".into()));
        }
        errs
    }
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
