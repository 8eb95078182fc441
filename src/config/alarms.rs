//! Alarm settings: `[alarms]` (engine-wide: chattering, shelving), `[[alarm_template]]`
//! (settings for every tag that matches a name pattern or belongs to an asset kind)
//! and the per-tag keys `rate_of_change`, `flatline`, `comms_loss` and `fault_code`
//! (limits stay in the tag's `limits`, see [`TagLimits`]).
//!
//! Every setting is optional so that a template and a tag can be merged key by key:
//! templates apply in file order (a later template overrides an earlier one), then
//! the tag's own keys override them all ([`TagAlarmSettings::resolve`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::plant::TagLimits;
use crate::config::units::HumanDuration;
use crate::config::{AssetConfig, TagConfig};

/// ISA-18.2 alarm priority; an event's severity follows from it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Low: the operator acts when time allows.
    Low,
    /// Medium: the operator acts soon.
    Medium,
    /// High: the operator acts now.
    High,
    /// Urgent: immediate action, safety or large loss at stake.
    Urgent,
}

impl Priority {
    /// The names used in the config and the API.
    pub const NAMES: [&'static str; 4] = ["low", "medium", "high", "urgent"];

    /// The name used in the config and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    /// Event severity (0..=1000) of an alarm of this priority.
    pub const fn severity(self) -> u16 {
        match self {
            Priority::Low => 250,
            Priority::Medium => 500,
            Priority::High => 750,
            Priority::Urgent => 1000,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "low" => Ok(Priority::Low),
            "medium" => Ok(Priority::Medium),
            "high" => Ok(Priority::High),
            "urgent" => Ok(Priority::Urgent),
            _ => Err(serde::de::Error::unknown_variant(&s, &Priority::NAMES)),
        }
    }
}

/// Priorities of the four limit alarms of a tag (`limits.priority`); defaults:
/// `hh` and `ll` high, `h` and `l` medium.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitPriorities {
    /// Priority of the high-high alarm.
    #[serde(default)]
    pub hh: Option<Priority>,
    /// Priority of the high alarm.
    #[serde(default)]
    pub h: Option<Priority>,
    /// Priority of the low alarm.
    #[serde(default)]
    pub l: Option<Priority>,
    /// Priority of the low-low alarm.
    #[serde(default)]
    pub ll: Option<Priority>,
}

/// Which way a rate-of-change alarm looks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RateDirection {
    /// Only a rise faster than the limit.
    Rise,
    /// Only a fall faster than the limit.
    Fall,
    /// Either way.
    Both,
}

impl<'de> Deserialize<'de> for RateDirection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "rise" => Ok(RateDirection::Rise),
            "fall" => Ok(RateDirection::Fall),
            "both" => Ok(RateDirection::Both),
            _ => Err(serde::de::Error::unknown_variant(&s, &["rise", "fall", "both"])),
        }
    }
}

/// `rate_of_change = { ... }`: the value moves faster than `max_per_min`, measured
/// over `window`.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateOfChangeConfig {
    /// `false` switches off a rate-of-change alarm a template gave this tag.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Largest allowed change per minute, in the tag's unit (required, > 0).
    #[serde(default)]
    pub max_per_min: Option<f64>,
    /// Span the rate is measured over (default `1m`); the rate is known once
    /// samples cover half of it.
    #[serde(default)]
    pub window: Option<HumanDuration>,
    /// `rise`, `fall` or `both` (default).
    #[serde(default)]
    pub direction: Option<RateDirection>,
    /// The rate must stay too fast this long before the alarm (default 0).
    #[serde(default)]
    pub on_delay: Option<HumanDuration>,
    /// The rate must stay normal this long before the alarm clears (default 0).
    #[serde(default)]
    pub off_delay: Option<HumanDuration>,
    /// Priority (default medium).
    #[serde(default)]
    pub priority: Option<Priority>,
}

/// `flatline = { ... }`: a stuck sensor, the value has not moved by more than
/// `tolerance` for `after`.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlatlineConfig {
    /// `false` switches off a flatline alarm a template gave this tag.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// How long the value must stand still (required).
    #[serde(default)]
    pub after: Option<HumanDuration>,
    /// A move up to this much (in the tag's unit) still counts as standing still
    /// (default 0: the very same value).
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// Priority (default low).
    #[serde(default)]
    pub priority: Option<Priority>,
}

/// `comms_loss = { ... }`: the tag's values have bad quality, or (with
/// `when_silent`) no value came at all, for `after`.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommsLossConfig {
    /// `false` switches off a comms-loss alarm a template gave this tag.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// How long the loss must last before the alarm (default `30s`).
    #[serde(default)]
    pub after: Option<HumanDuration>,
    /// Also count silence (no sample for `after`) as a loss; right for polled and
    /// periodically published tags, wrong for report-by-exception ones (default false).
    #[serde(default)]
    pub when_silent: Option<bool>,
    /// Priority (default low).
    #[serde(default)]
    pub priority: Option<Priority>,
}

/// `fault_code = { ... }`: a state alarm, active while the tag (a fault-code
/// register or a fault bit) is not 0; the code goes into the message.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultCodeConfig {
    /// `false` switches off a fault-code alarm a template gave this tag.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The code must stay non-zero this long before the alarm (default 0).
    #[serde(default)]
    pub on_delay: Option<HumanDuration>,
    /// The code must stay 0 this long before the alarm clears (default 0).
    #[serde(default)]
    pub off_delay: Option<HumanDuration>,
    /// Priority (default high).
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Texts of known codes, e.g. `{ "101" = "jam" }`; keys are integers.
    #[serde(default)]
    pub codes: Option<BTreeMap<String, String>>,
}

/// The alarm keys a `[[tag]]` and an `[[alarm_template]]` share.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TagAlarmSettings {
    /// Limit alarms (HH/H/L/LL with deadband and delays).
    pub limits: Option<TagLimits>,
    /// Rate-of-change alarm.
    pub rate_of_change: Option<RateOfChangeConfig>,
    /// Flatline (stuck sensor) alarm.
    pub flatline: Option<FlatlineConfig>,
    /// Comms-loss alarm.
    pub comms_loss: Option<CommsLossConfig>,
    /// Fault-code (state) alarm.
    pub fault_code: Option<FaultCodeConfig>,
}

/// `[[alarm_template]]`: alarm settings for every tag that matches `match` (a
/// name pattern, `*` any run of characters, `?` one) and/or belongs to an asset
/// of kind `asset_kind`; both given means both must hold.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmTemplateConfig {
    /// Tag-name pattern, e.g. `*.bearing_*_temp`.
    #[serde(default, rename = "match")]
    pub pattern: Option<String>,
    /// Asset kind, e.g. `capper`: every tag of an asset of this kind.
    #[serde(default)]
    pub asset_kind: Option<String>,
    /// Limit alarms (as a tag's `limits`).
    #[serde(default)]
    pub limits: Option<TagLimits>,
    /// Rate-of-change alarm.
    #[serde(default)]
    pub rate_of_change: Option<RateOfChangeConfig>,
    /// Flatline alarm.
    #[serde(default)]
    pub flatline: Option<FlatlineConfig>,
    /// Comms-loss alarm.
    #[serde(default)]
    pub comms_loss: Option<CommsLossConfig>,
    /// Fault-code alarm.
    #[serde(default)]
    pub fault_code: Option<FaultCodeConfig>,
}

impl AlarmTemplateConfig {
    /// Whether this template applies to `tag` (whose asset has kind `asset_kind`).
    pub fn applies_to(&self, tag: &str, asset_kind: Option<&str>) -> bool {
        let by_name = self.pattern.as_deref().is_none_or(|p| glob_match(p, tag));
        let by_kind = self.asset_kind.as_deref().is_none_or(|k| asset_kind == Some(k));
        (self.pattern.is_some() || self.asset_kind.is_some()) && by_name && by_kind
    }

    fn settings(&self) -> TagAlarmSettings {
        TagAlarmSettings {
            limits: self.limits.clone(),
            rate_of_change: self.rate_of_change.clone(),
            flatline: self.flatline.clone(),
            comms_loss: self.comms_loss.clone(),
            fault_code: self.fault_code.clone(),
        }
    }
}

/// Chattering: an alarm that activates `activations` times within `window` is
/// marked chattering; its further activations are counted, not annunciated,
/// until it has not activated for `quiet`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatteringConfig {
    /// Activations within `window` that make an alarm chattering (default 5; 0 switches detection off).
    #[serde(default = "default_chatter_activations")]
    pub activations: u32,
    /// The window (default `10m`).
    #[serde(default = "default_chatter_window")]
    pub window: HumanDuration,
    /// How long a chattering alarm must stay without activation to be annunciated again (default `10m`).
    #[serde(default = "default_chatter_quiet")]
    pub quiet: HumanDuration,
}

fn default_chatter_activations() -> u32 {
    5
}
fn default_chatter_window() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_chatter_quiet() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

impl Default for ChatteringConfig {
    fn default() -> Self {
        ChatteringConfig {
            activations: default_chatter_activations(),
            window: default_chatter_window(),
            quiet: default_chatter_quiet(),
        }
    }
}

/// `[alarms]`: settings of the alarm engine as a whole.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmsConfig {
    /// Chattering detection.
    #[serde(default)]
    pub chattering: ChatteringConfig,
    /// Longest an operator may shelve an alarm for (default `8h`).
    #[serde(default)]
    pub max_shelve: Option<HumanDuration>,
}

impl AlarmsConfig {
    /// The longest shelving allowed.
    pub fn max_shelve(&self) -> Duration {
        self.max_shelve.map(|d| d.0).unwrap_or(Duration::from_secs(8 * 3600))
    }
}

/// `over` key by key on top of `base`.
fn pick<T: Clone>(base: &Option<T>, over: &Option<T>) -> Option<T> {
    over.clone().or_else(|| base.clone())
}

fn merge_limits(b: &TagLimits, o: &TagLimits) -> TagLimits {
    let prio = match (&b.priority, &o.priority) {
        (Some(b), Some(o)) => Some(LimitPriorities {
            hh: pick(&b.hh, &o.hh),
            h: pick(&b.h, &o.h),
            l: pick(&b.l, &o.l),
            ll: pick(&b.ll, &o.ll),
        }),
        (b, o) => pick(b, o),
    };
    TagLimits {
        enabled: pick(&b.enabled, &o.enabled),
        hh: pick(&b.hh, &o.hh),
        h: pick(&b.h, &o.h),
        l: pick(&b.l, &o.l),
        ll: pick(&b.ll, &o.ll),
        deadband: pick(&b.deadband, &o.deadband),
        on_delay: pick(&b.on_delay, &o.on_delay),
        off_delay: pick(&b.off_delay, &o.off_delay),
        priority: prio,
    }
}

fn merge_roc(b: &RateOfChangeConfig, o: &RateOfChangeConfig) -> RateOfChangeConfig {
    RateOfChangeConfig {
        enabled: pick(&b.enabled, &o.enabled),
        max_per_min: pick(&b.max_per_min, &o.max_per_min),
        window: pick(&b.window, &o.window),
        direction: pick(&b.direction, &o.direction),
        on_delay: pick(&b.on_delay, &o.on_delay),
        off_delay: pick(&b.off_delay, &o.off_delay),
        priority: pick(&b.priority, &o.priority),
    }
}

fn merge_flat(b: &FlatlineConfig, o: &FlatlineConfig) -> FlatlineConfig {
    FlatlineConfig {
        enabled: pick(&b.enabled, &o.enabled),
        after: pick(&b.after, &o.after),
        tolerance: pick(&b.tolerance, &o.tolerance),
        priority: pick(&b.priority, &o.priority),
    }
}

fn merge_comms(b: &CommsLossConfig, o: &CommsLossConfig) -> CommsLossConfig {
    CommsLossConfig {
        enabled: pick(&b.enabled, &o.enabled),
        after: pick(&b.after, &o.after),
        when_silent: pick(&b.when_silent, &o.when_silent),
        priority: pick(&b.priority, &o.priority),
    }
}

fn merge_fault(b: &FaultCodeConfig, o: &FaultCodeConfig) -> FaultCodeConfig {
    FaultCodeConfig {
        enabled: pick(&b.enabled, &o.enabled),
        on_delay: pick(&b.on_delay, &o.on_delay),
        off_delay: pick(&b.off_delay, &o.off_delay),
        priority: pick(&b.priority, &o.priority),
        codes: pick(&b.codes, &o.codes),
    }
}

fn merge_opt<T: Clone>(b: &Option<T>, o: &Option<T>, f: fn(&T, &T) -> T) -> Option<T> {
    match (b, o) {
        (Some(b), Some(o)) => Some(f(b, o)),
        (b, o) => pick(b, o),
    }
}

impl TagAlarmSettings {
    /// The tag's own alarm keys.
    pub fn of_tag(tag: &TagConfig) -> TagAlarmSettings {
        TagAlarmSettings {
            limits: tag.limits.clone(),
            rate_of_change: tag.rate_of_change.clone(),
            flatline: tag.flatline.clone(),
            comms_loss: tag.comms_loss.clone(),
            fault_code: tag.fault_code.clone(),
        }
    }

    /// `over` key by key on top of `self`.
    pub fn overlay(&self, over: &TagAlarmSettings) -> TagAlarmSettings {
        TagAlarmSettings {
            limits: merge_opt(&self.limits, &over.limits, merge_limits),
            rate_of_change: merge_opt(&self.rate_of_change, &over.rate_of_change, merge_roc),
            flatline: merge_opt(&self.flatline, &over.flatline, merge_flat),
            comms_loss: merge_opt(&self.comms_loss, &over.comms_loss, merge_comms),
            fault_code: merge_opt(&self.fault_code, &over.fault_code, merge_fault),
        }
    }

    /// Drops the conditions that do not fit a tag's value type (a template may
    /// cover tags of several types): limits, rate of change and flatline need a
    /// number (f64 or i64), a fault code an integer or a bool.
    fn fitting(mut self, tag: &TagConfig) -> TagAlarmSettings {
        use crate::domain::ValueKind as K;
        let number = matches!(tag.value_type, K::F64 | K::I64);
        if !number {
            self.limits = None;
            self.rate_of_change = None;
            self.flatline = None;
        }
        if !matches!(tag.value_type, K::I64 | K::Bool) {
            self.fault_code = None;
        }
        self
    }

    /// The settings in force for `tag`: every template that applies, in file
    /// order, then the tag's own keys. Template conditions that do not fit the
    /// tag's type are dropped; the tag's own are checked at load.
    pub fn resolve(tag: &TagConfig, assets: &[AssetConfig], templates: &[AlarmTemplateConfig]) -> TagAlarmSettings {
        let kind = assets.iter().find(|a| a.id == tag.asset).map(|a| a.kind.as_str());
        let mut merged = TagAlarmSettings::default();
        for t in templates.iter().filter(|t| t.applies_to(&tag.name, kind)) {
            merged = merged.overlay(&t.settings());
        }
        merged.fitting(tag).overlay(&TagAlarmSettings::of_tag(tag))
    }
}

/// Matches `text` against `pattern`: `*` any run of characters (also none), `?`
/// exactly one, everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn positive_duration(d: Option<HumanDuration>, key: &'static str, errs: &mut Vec<(&'static str, String)>) {
    if let Some(d) = d {
        if d.0.is_zero() {
            errs.push((key, format!("{key} must be more than 0")));
        }
    }
}

impl RateOfChangeConfig {
    /// Problems as (key, message); `merged` asks for the required keys too.
    pub(crate) fn check(&self, merged: bool) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        match self.max_per_min {
            Some(m) if !(m.is_finite() && m > 0.0) => {
                errs.push(("max_per_min", format!("max_per_min ({m}) must be a number > 0")))
            }
            None if merged && self.enabled != Some(false) => {
                errs.push(("max_per_min", "a rate-of-change alarm needs max_per_min".to_string()))
            }
            _ => {}
        }
        positive_duration(self.window, "window", &mut errs);
        errs
    }
}

impl FlatlineConfig {
    /// Problems as (key, message); `merged` asks for the required keys too.
    pub(crate) fn check(&self, merged: bool) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        if self.after.is_none() && merged && self.enabled != Some(false) {
            errs.push(("after", "a flatline alarm needs `after` (how long the value stands still)".to_string()));
        }
        positive_duration(self.after, "after", &mut errs);
        if let Some(t) = self.tolerance {
            if !(t.is_finite() && t >= 0.0) {
                errs.push(("tolerance", format!("tolerance ({t}) must be a number >= 0")));
            }
        }
        errs
    }
}

impl CommsLossConfig {
    /// Problems as (key, message).
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        positive_duration(self.after, "after", &mut errs);
        errs
    }
}

impl FaultCodeConfig {
    /// Problems as (key, message).
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        for k in self.codes.iter().flat_map(|c| c.keys()) {
            if k.trim().parse::<i64>().is_err() {
                errs.push(("codes", format!("code `{k}` is not an integer")));
            }
        }
        errs
    }

    /// The text configured for `code`.
    pub fn text(&self, code: i64) -> Option<&str> {
        self.codes.as_ref()?.iter().find(|(k, _)| k.trim().parse::<i64>() == Ok(code)).map(|(_, v)| v.as_str())
    }
}

impl ChatteringConfig {
    /// Problems as (key, message).
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        positive_duration(Some(self.window), "chattering.window", &mut errs);
        positive_duration(Some(self.quiet), "chattering.quiet", &mut errs);
        if self.activations == 1 {
            errs.push(("chattering.activations", "activations must be 0 (off) or 2 and more".to_string()));
        }
        errs
    }
}

/// Checks a template pattern: tag-name characters plus `*` and `?`.
pub(crate) fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("must not be empty".to_string());
    }
    if let Some(c) =
        p.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/' | '*' | '?')))
    {
        return Err(format!("`{p}` contains {c:?}; use tag-name characters and the wildcards `*` and `?`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.bearing_*_temp", "capper.bearing_de_temp"));
        assert!(glob_match("filler.fill_level_??", "filler.fill_level_07"));
        assert!(!glob_match("filler.fill_level_??", "filler.fill_level_7"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
        assert!(glob_match("capper.state", "capper.state"));
        assert!(!glob_match("capper.state", "capper.states"));
    }

    #[test]
    fn later_keys_win_key_by_key() {
        let base = TagAlarmSettings {
            limits: Some(TagLimits { h: Some(2.8), hh: Some(4.5), deadband: Some(0.1), ..Default::default() }),
            flatline: Some(FlatlineConfig {
                after: Some(HumanDuration(Duration::from_secs(600))),
                ..Default::default()
            }),
            ..Default::default()
        };
        let over = TagAlarmSettings {
            limits: Some(TagLimits { h: Some(3.0), ..Default::default() }),
            flatline: Some(FlatlineConfig { enabled: Some(false), ..Default::default() }),
            ..Default::default()
        };
        let m = base.overlay(&over);
        let l = m.limits.expect("limits");
        assert_eq!((l.h, l.hh, l.deadband), (Some(3.0), Some(4.5), Some(0.1)));
        let f = m.flatline.expect("flatline");
        assert_eq!((f.enabled, f.after.map(|d| d.0.as_secs())), (Some(false), Some(600)));
    }
}
