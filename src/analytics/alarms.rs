//! Alarms after ISA-18.2: limit (HH/H/L/LL with deadband and on/off delays), rate
//! of change, flatline (stuck sensor), comms loss and fault-code (state) alarms,
//! built from the config ([`crate::config::alarms`]).
//!
//! The [`AlarmEngine`] is pure: it is driven by samples ([`AlarmEngine::on_sample`])
//! and by time ([`AlarmEngine::tick`]), and answers with the [`Event`]s to store, so
//! the daemon runs it live on every committed sample and a tool can run it offline
//! over a stored range with the same result. Time is the samples' own (UTC ns);
//! delays are honoured exactly: an alarm whose value stayed over its limit for the
//! on-delay is raised at `first exceedance + on_delay`, whenever the engine learns it.
//!
//! There is one alarm per (tag, condition), with the id `tag:condition`
//! (`capper.vib_de_rms:h`). Its state follows ISA-18.2: Normal, Unacknowledged
//! (active), Acknowledged (active), Returned-to-normal unacknowledged, and Shelved
//! (by an operator, until a time). An alarm that activates too often is marked
//! chattering: its further activations are counted, not annunciated, until it has
//! been quiet for a while. Every transition is an `Event` (kind `alarm`, and
//! `acknowledgement` for an acknowledgement) whose details carry the tag,
//! condition, limit, value, state before and after, user and comment.
//!
//! Condition changes while an alarm is shelved or chattering are tracked but not
//! annunciated (no event); unshelving or the end of chattering brings the state in
//! line with the condition (with an event).

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use serde_json::json;

use crate::config::alarms::{FaultCodeConfig, RateDirection};
use crate::config::{Config, Priority, TagConfig};
use crate::domain::{Event, EventKind, Quality, QualityClass, Sample, SeriesId, Timestamp};

const NS_PER_MIN: f64 = 60e9;

/// What an alarm watches.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Above the high-high limit.
    #[serde(rename = "hh")]
    HighHigh,
    /// Above the high limit.
    #[serde(rename = "h")]
    High,
    /// Below the low limit.
    #[serde(rename = "l")]
    Low,
    /// Below the low-low limit.
    #[serde(rename = "ll")]
    LowLow,
    /// Changing faster than allowed.
    RateOfChange,
    /// Not changing at all (stuck sensor).
    Flatline,
    /// Bad quality or no values.
    CommsLoss,
    /// A non-zero fault code.
    FaultCode,
}

impl Condition {
    /// The name in alarm ids, events and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Condition::HighHigh => "hh",
            Condition::High => "h",
            Condition::Low => "l",
            Condition::LowLow => "ll",
            Condition::RateOfChange => "rate_of_change",
            Condition::Flatline => "flatline",
            Condition::CommsLoss => "comms_loss",
            Condition::FaultCode => "fault_code",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Condition::HighHigh => "HH",
            Condition::High => "H",
            Condition::Low => "L",
            Condition::LowLow => "LL",
            Condition::RateOfChange => "rate of change",
            Condition::Flatline => "flatline",
            Condition::CommsLoss => "comms loss",
            Condition::FaultCode => "fault",
        }
    }
}

/// ISA-18.2 alarm states.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    /// Condition normal, nothing to acknowledge.
    Normal,
    /// Active and not yet acknowledged.
    Unacknowledged,
    /// Active and acknowledged.
    Acknowledged,
    /// Returned to normal before it was acknowledged.
    ReturnedUnacknowledged,
    /// Shelved by an operator: not annunciated until unshelved or expired.
    Shelved,
}

impl AlarmState {
    /// The name in events and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlarmState::Normal => "normal",
            AlarmState::Unacknowledged => "unacknowledged",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::ReturnedUnacknowledged => "returned_unacknowledged",
            AlarmState::Shelved => "shelved",
        }
    }
}

/// What an operator action on an alarm can fail on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AlarmError {
    /// No alarm has this id.
    #[error("no alarm `{0}`")]
    Unknown(String),
    /// The alarm is not waiting for an acknowledgement.
    #[error("alarm `{id}` is {state}, there is nothing to acknowledge")]
    NothingToAcknowledge {
        /// The alarm.
        id: String,
        /// Its state.
        state: &'static str,
    },
    /// The shelving time is not in the future or longer than `[alarms] max_shelve`.
    #[error("alarm `{id}`: shelve for more than 0 and at most {max_s} s, not {asked_s} s")]
    BadShelveTime {
        /// The alarm.
        id: String,
        /// Seconds asked for.
        asked_s: i64,
        /// The most allowed.
        max_s: i64,
    },
    /// The alarm is not shelved.
    #[error("alarm `{0}` is not shelved")]
    NotShelved(String),
}

/// An operator's shelving of an alarm.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Shelf {
    /// Who shelved it.
    pub user: String,
    /// When it was shelved.
    pub since: Timestamp,
    /// When it comes back by itself.
    pub until: Timestamp,
    /// Why.
    pub comment: String,
}

/// One alarm as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlarmStatus {
    /// `tag:condition`.
    pub id: String,
    /// The tag.
    pub tag: String,
    /// Its asset.
    pub asset: String,
    /// The condition watched.
    pub condition: Condition,
    /// Priority.
    pub priority: &'static str,
    /// ISA-18.2 state.
    pub state: AlarmState,
    /// Whether the condition is active now (after delays), whatever the state.
    pub active: bool,
    /// Latest good value of the tag.
    pub value: Option<f64>,
    /// The limit (limit alarms), the largest rate per minute (rate of change).
    pub limit: Option<f64>,
    /// The active fault code (fault-code alarms).
    pub code: Option<i64>,
    /// Time of the last state change.
    pub since: Option<Timestamp>,
    /// Marked chattering: activations are counted, not annunciated.
    pub chattering: bool,
    /// Activations held back since the alarm became chattering or was shelved.
    pub suppressed: u64,
    /// The shelving, while shelved.
    pub shelved: Option<Shelf>,
    /// One line for people.
    pub message: String,
}

/// The condition-specific part of an alarm definition.
#[derive(Clone, Debug)]
enum Spec {
    Limit { limit: f64, deadband: f64 },
    Rate { max_per_min: f64, window: i64, direction: RateDirection },
    Flat { tolerance: f64 },
    Comms { when_silent: bool },
    Fault { cfg: FaultCodeConfig },
}

/// One configured alarm.
#[derive(Clone, Debug)]
struct Def {
    id: String,
    tag: String,
    asset: String,
    unit: String,
    condition: Condition,
    priority: Priority,
    on_delay: i64,
    off_delay: i64,
    spec: Spec,
}

/// What a sample says about a condition.
#[derive(Copy, Clone, Debug)]
enum Raw {
    /// The condition holds, since this time.
    On(Timestamp),
    /// The condition does not hold, since this time.
    Off(Timestamp),
    /// Nothing new (keep timers).
    Hold,
    /// The value cannot be judged (bad quality): pending delays restart.
    Unknown,
}

/// Engine-wide settings.
#[derive(Clone, Debug)]
struct Settings {
    chatter_activations: usize,
    chatter_window: i64,
    chatter_quiet: i64,
    max_shelve: i64,
}

#[derive(Clone, Debug)]
struct Alarm {
    def: Def,
    state: AlarmState,
    shelf: Option<Shelf>,
    /// Condition after delays.
    active: bool,
    pending_on: Option<Timestamp>,
    pending_off: Option<Timestamp>,
    /// The alarm's own clock: the latest time it was brought to.
    clock: Timestamp,
    value: Option<f64>,
    code: i64,
    since: Option<Timestamp>,
    activations: VecDeque<Timestamp>,
    chattering: bool,
    suppressed: u64,
    last_activation: Option<Timestamp>,
    rate_buf: VecDeque<(Timestamp, f64)>,
    rate: Option<f64>,
    flat_ref: Option<(Timestamp, f64)>,
    last_seen: Option<Timestamp>,
    bad_since: Option<Timestamp>,
    last_quality: Quality,
}

/// The alarm engine: every configured alarm and its state. See the module docs.
#[derive(Clone, Debug)]
pub struct AlarmEngine {
    alarms: Vec<Alarm>,
    by_series: HashMap<SeriesId, Vec<usize>>,
    by_id: HashMap<String, usize>,
    settings: Settings,
    /// The first time the engine saw (silence counts from here for tags never seen).
    start: Option<Timestamp>,
}

fn ns(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn opt_ns(d: Option<crate::config::units::HumanDuration>) -> i64 {
    d.map(|d| ns(d.0)).unwrap_or(0)
}

fn defs_for(config: &Config, tag: &TagConfig) -> Vec<Def> {
    let s = config.tag_alarms(tag);
    let mut out = Vec::new();
    let def = |condition: Condition, priority: Priority, on_delay: i64, off_delay: i64, spec: Spec| Def {
        id: format!("{}:{}", tag.name, condition.as_str()),
        tag: tag.name.clone(),
        asset: tag.asset.clone(),
        unit: tag.unit.clone(),
        condition,
        priority,
        on_delay,
        off_delay,
        spec,
    };
    if let Some(l) = s.limits.as_ref().filter(|l| l.enabled != Some(false)) {
        let p = l.priority.clone().unwrap_or_default();
        let deadband = l.deadband.unwrap_or(0.0);
        for (cond, limit, prio) in [
            (Condition::HighHigh, l.hh, p.hh.unwrap_or(Priority::High)),
            (Condition::High, l.h, p.h.unwrap_or(Priority::Medium)),
            (Condition::Low, l.l, p.l.unwrap_or(Priority::Medium)),
            (Condition::LowLow, l.ll, p.ll.unwrap_or(Priority::High)),
        ] {
            if let Some(limit) = limit {
                out.push(def(cond, prio, opt_ns(l.on_delay), opt_ns(l.off_delay), Spec::Limit { limit, deadband }));
            }
        }
    }
    if let Some(r) = s.rate_of_change.as_ref().filter(|r| r.enabled != Some(false)) {
        if let Some(max_per_min) = r.max_per_min {
            let window = r.window.map(|w| ns(w.0)).unwrap_or(60 * 1_000_000_000);
            let spec = Spec::Rate { max_per_min, window, direction: r.direction.unwrap_or(RateDirection::Both) };
            out.push(def(
                Condition::RateOfChange,
                r.priority.unwrap_or(Priority::Medium),
                opt_ns(r.on_delay),
                opt_ns(r.off_delay),
                spec,
            ));
        }
    }
    if let Some(f) = s.flatline.as_ref().filter(|f| f.enabled != Some(false)) {
        if let Some(after) = f.after {
            let spec = Spec::Flat { tolerance: f.tolerance.unwrap_or(0.0) };
            out.push(def(Condition::Flatline, f.priority.unwrap_or(Priority::Low), ns(after.0), 0, spec));
        }
    }
    if let Some(c) = s.comms_loss.as_ref().filter(|c| c.enabled != Some(false)) {
        let after = c.after.map(|a| ns(a.0)).unwrap_or(30 * 1_000_000_000);
        let spec = Spec::Comms { when_silent: c.when_silent.unwrap_or(false) };
        out.push(def(Condition::CommsLoss, c.priority.unwrap_or(Priority::Low), after, 0, spec));
    }
    if let Some(f) = s.fault_code.as_ref().filter(|f| f.enabled != Some(false)) {
        out.push(def(
            Condition::FaultCode,
            f.priority.unwrap_or(Priority::High),
            opt_ns(f.on_delay),
            opt_ns(f.off_delay),
            Spec::Fault { cfg: f.clone() },
        ));
    }
    out
}

impl AlarmEngine {
    /// Builds every alarm the config defines; `series` names the series of a tag
    /// (tags without one are left out). All alarms start Normal.
    pub fn new(config: &Config, series: impl Fn(&str) -> Option<SeriesId>) -> AlarmEngine {
        let chat = &config.alarms.chattering;
        let settings = Settings {
            chatter_activations: chat.activations as usize,
            chatter_window: ns(chat.window.0),
            chatter_quiet: ns(chat.quiet.0),
            max_shelve: ns(config.alarms.max_shelve()),
        };
        let mut engine =
            AlarmEngine { alarms: Vec::new(), by_series: HashMap::new(), by_id: HashMap::new(), settings, start: None };
        for tag in &config.tags {
            let Some(sid) = series(&tag.name) else { continue };
            for def in defs_for(config, tag) {
                let i = engine.alarms.len();
                engine.by_series.entry(sid).or_default().push(i);
                engine.by_id.insert(def.id.clone(), i);
                engine.alarms.push(Alarm::new(def));
            }
        }
        engine
    }

    /// Builds the engine for the daemon's bound tags (tag name → series).
    pub fn for_bound_tags(config: &Config, tags: &[crate::ingest::BoundTag]) -> AlarmEngine {
        let map: HashMap<&str, SeriesId> = tags.iter().map(|t| (t.tag.name.as_str(), t.series)).collect();
        AlarmEngine::new(config, |name| map.get(name).copied())
    }

    /// How many alarms are configured.
    pub fn len(&self) -> usize {
        self.alarms.len()
    }

    /// True when no alarm is configured.
    pub fn is_empty(&self) -> bool {
        self.alarms.is_empty()
    }

    /// Every alarm id, in config order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.alarms.iter().map(|a| a.def.id.as_str())
    }

    fn note_time(&mut self, ts: Timestamp) {
        if self.start.is_none_or(|s| ts < s) {
            self.start = Some(ts);
        }
    }

    /// Evaluates one sample against the alarms of its series; returns the events
    /// of the transitions it caused (and of timers of those alarms that fell due
    /// up to its time).
    pub fn on_sample(&mut self, sample: &Sample) -> Vec<Event> {
        let mut out = Vec::new();
        self.note_time(sample.ts);
        let Some(idx) = self.by_series.get(&sample.series) else { return out };
        for &i in idx {
            self.alarms[i].on_sample(sample, &self.settings, &mut out);
        }
        out
    }

    /// Brings every alarm to `now`: on/off delays, flatline and silence, shelving
    /// expiry and the end of chattering that fell due. Call it regularly (every
    /// second live; at least as often as the shortest delay offline).
    pub fn tick(&mut self, now: Timestamp) -> Vec<Event> {
        let mut out = Vec::new();
        self.note_time(now);
        let start = self.start.unwrap_or(now);
        for a in &mut self.alarms {
            a.tick(now, start, &self.settings, &mut out);
        }
        out.sort_by_key(|e| e.ts);
        out
    }

    fn index(&self, id: &str) -> Result<usize, AlarmError> {
        self.by_id.get(id).copied().ok_or_else(|| AlarmError::Unknown(id.to_string()))
    }

    /// An operator acknowledges an alarm: Unacknowledged → Acknowledged, or
    /// Returned-unacknowledged → Normal. The event has kind `acknowledgement`.
    pub fn acknowledge(
        &mut self,
        id: &str,
        user: &str,
        comment: &str,
        now: Timestamp,
    ) -> Result<Vec<Event>, AlarmError> {
        let i = self.index(id)?;
        let mut out = Vec::new();
        let a = &mut self.alarms[i];
        a.advance(now, &self.settings, &mut out);
        let now = now.max(a.clock);
        let after = match a.state {
            AlarmState::Unacknowledged => AlarmState::Acknowledged,
            AlarmState::ReturnedUnacknowledged => AlarmState::Normal,
            s => return Err(AlarmError::NothingToAcknowledge { id: id.to_string(), state: s.as_str() }),
        };
        a.transition(now, after, "acknowledged", EventKind::Acknowledgement, Some((user, comment)), &mut out);
        Ok(out)
    }

    /// An operator shelves an alarm until `until` (at most `[alarms] max_shelve`
    /// ahead): it is not annunciated meanwhile. Shelving a shelved alarm again
    /// moves its end.
    pub fn shelve(
        &mut self,
        id: &str,
        user: &str,
        until: Timestamp,
        comment: &str,
        now: Timestamp,
    ) -> Result<Vec<Event>, AlarmError> {
        let i = self.index(id)?;
        let max = self.settings.max_shelve;
        let mut out = Vec::new();
        let a = &mut self.alarms[i];
        a.advance(now, &self.settings, &mut out);
        let now = now.max(a.clock);
        let span = until.saturating_sub(now);
        if span <= 0 || span > max {
            return Err(AlarmError::BadShelveTime {
                id: id.to_string(),
                asked_s: span / 1_000_000_000,
                max_s: max / 1_000_000_000,
            });
        }
        a.shelf = Some(Shelf { user: user.to_string(), since: now, until, comment: comment.to_string() });
        a.suppressed = 0;
        a.transition(now, AlarmState::Shelved, "shelved", EventKind::Alarm, Some((user, comment)), &mut out);
        Ok(out)
    }

    /// An operator takes an alarm off the shelf before its time: it is annunciated
    /// again (Unacknowledged if its condition is active, else Normal).
    pub fn unshelve(&mut self, id: &str, user: &str, now: Timestamp) -> Result<Vec<Event>, AlarmError> {
        let i = self.index(id)?;
        let mut out = Vec::new();
        let a = &mut self.alarms[i];
        a.advance(now, &self.settings, &mut out);
        if a.shelf.is_none() {
            return Err(AlarmError::NotShelved(id.to_string()));
        }
        let now = now.max(a.clock);
        a.unshelve(now, "unshelved", Some((user, "")), &mut out);
        Ok(out)
    }

    /// The alarms an operator must see: every alarm not Normal, and chattering ones.
    pub fn snapshot(&self) -> Vec<AlarmStatus> {
        self.alarms.iter().filter(|a| a.state != AlarmState::Normal || a.chattering).map(Alarm::status).collect()
    }

    /// Every configured alarm with its state.
    pub fn all(&self) -> Vec<AlarmStatus> {
        self.alarms.iter().map(Alarm::status).collect()
    }

    /// One alarm's status.
    pub fn status(&self, id: &str) -> Option<AlarmStatus> {
        self.by_id.get(id).map(|&i| self.alarms[i].status())
    }
}

impl Alarm {
    fn new(def: Def) -> Alarm {
        Alarm {
            def,
            state: AlarmState::Normal,
            shelf: None,
            active: false,
            pending_on: None,
            pending_off: None,
            clock: i64::MIN,
            value: None,
            code: 0,
            since: None,
            activations: VecDeque::new(),
            chattering: false,
            suppressed: 0,
            last_activation: None,
            rate_buf: VecDeque::new(),
            rate: None,
            flat_ref: None,
            last_seen: None,
            bad_since: None,
            last_quality: Quality::GOOD,
        }
    }

    fn limit(&self) -> Option<f64> {
        match &self.def.spec {
            Spec::Limit { limit, .. } => Some(*limit),
            Spec::Rate { max_per_min, .. } => Some(*max_per_min),
            _ => None,
        }
    }

    fn status(&self) -> AlarmStatus {
        AlarmStatus {
            id: self.def.id.clone(),
            tag: self.def.tag.clone(),
            asset: self.def.asset.clone(),
            condition: self.def.condition,
            priority: self.def.priority.as_str(),
            state: self.state,
            active: self.active,
            value: self.value,
            limit: self.limit(),
            code: (self.def.condition == Condition::FaultCode && self.code != 0).then_some(self.code),
            since: self.since,
            chattering: self.chattering,
            suppressed: self.suppressed,
            shelved: self.shelf.clone(),
            message: self.describe(),
        }
    }

    fn fmt_value(&self, v: f64) -> String {
        if self.def.unit.is_empty() {
            format!("{v}")
        } else {
            format!("{v} {}", self.def.unit)
        }
    }

    /// What the condition is, in a few words, for messages.
    fn describe(&self) -> String {
        let d = &self.def;
        let val = self.value.map(|v| self.fmt_value(v)).unwrap_or_else(|| "no value".to_string());
        match &d.spec {
            Spec::Limit { limit, .. } => {
                let side = if matches!(d.condition, Condition::HighHigh | Condition::High) { "above" } else { "below" };
                format!("{} {}: {val} ({side} {})", d.tag, d.condition.label(), self.fmt_value(*limit))
            }
            Spec::Rate { max_per_min, .. } => format!(
                "{} rate of change: {}/min (limit {}/min)",
                d.tag,
                self.rate.map(|r| format!("{r:.3}")).unwrap_or_else(|| "-".into()),
                max_per_min
            ),
            Spec::Flat { .. } => {
                format!("{} flatline: stuck at {val} for {} s or more", d.tag, d.on_delay / 1_000_000_000)
            }
            Spec::Comms { .. } => format!("{} comms loss: quality {}", d.tag, self.last_quality),
            Spec::Fault { cfg } => match cfg.text(self.code) {
                Some(t) => format!("{} fault {} ({t})", d.tag, self.code),
                None => format!("{} fault {}", d.tag, self.code),
            },
        }
    }

    /// What `s` says about this alarm's condition (and updates the condition memory).
    fn evaluate(&mut self, s: &Sample) -> Raw {
        let ts = s.ts;
        let good = s.quality.is_good();
        if let Spec::Comms { .. } = self.def.spec {
            self.last_seen = Some(self.last_seen.map_or(ts, |l| l.max(ts)));
            self.last_quality = s.quality;
            if s.quality.class() == QualityClass::Bad {
                return Raw::On(*self.bad_since.get_or_insert(ts));
            }
            self.bad_since = None;
            return Raw::Off(ts);
        }
        if !good {
            return if s.quality.class() == QualityClass::Bad { Raw::Unknown } else { Raw::Hold };
        }
        let Some(v) = s.value.as_f64().filter(|v| v.is_finite()) else { return Raw::Hold };
        self.value = Some(v);
        let on = |c: bool| if c { Raw::On(ts) } else { Raw::Off(ts) };
        match &self.def.spec {
            Spec::Limit { limit, deadband } => {
                let high = matches!(self.def.condition, Condition::HighHigh | Condition::High);
                match (high, self.active) {
                    (true, false) => on(v > *limit),
                    (true, true) => on(v > limit - deadband),
                    (false, false) => on(v < *limit),
                    (false, true) => on(v < limit + deadband),
                }
            }
            Spec::Rate { max_per_min, window, direction } => {
                let (max, window, direction) = (*max_per_min, *window, *direction);
                self.rate_buf.push_back((ts, v));
                while self.rate_buf.front().is_some_and(|(t, _)| *t < ts - window) {
                    self.rate_buf.pop_front();
                }
                let Some(&(t0, v0)) = self.rate_buf.front() else { return Raw::Hold };
                if ts - t0 < window / 2 {
                    return Raw::Hold;
                }
                let rate = (v - v0) / (ts - t0) as f64 * NS_PER_MIN;
                self.rate = Some(rate);
                on(match direction {
                    RateDirection::Rise => rate > max,
                    RateDirection::Fall => -rate > max,
                    RateDirection::Both => rate.abs() > max,
                })
            }
            Spec::Flat { tolerance } => match self.flat_ref {
                Some((t0, v0)) if (v - v0).abs() <= *tolerance => Raw::On(t0),
                _ => {
                    self.flat_ref = Some((ts, v));
                    Raw::Off(ts)
                }
            },
            Spec::Fault { .. } => {
                let code = v as i64;
                if code != 0 {
                    self.code = code;
                }
                on(code != 0)
            }
            Spec::Comms { .. } => Raw::Hold,
        }
    }

    fn on_sample(&mut self, s: &Sample, st: &Settings, out: &mut Vec<Event>) {
        let ts = s.ts.max(self.clock);
        let code_before = self.code;
        self.advance(ts, st, out);
        let raw = self.evaluate(s);
        match raw {
            Raw::On(since) => {
                self.pending_off = None;
                if !self.active && self.pending_on.is_none() {
                    self.pending_on = Some(since);
                }
            }
            Raw::Off(since) => {
                self.pending_on = None;
                if self.active && self.pending_off.is_none() {
                    self.pending_off = Some(since);
                }
            }
            Raw::Hold => {}
            Raw::Unknown => {
                self.pending_on = None;
                self.pending_off = None;
            }
        }
        self.advance(ts, st, out);
        // A fault code that changes while the alarm stands is a new fault: annunciate it.
        if self.def.condition == Condition::FaultCode
            && self.active
            && self.code != code_before
            && code_before != 0
            && self.pending_off.is_none()
            && self.shelf.is_none()
            && !self.chattering
        {
            self.transition(ts, AlarmState::Unacknowledged, "code_changed", EventKind::Alarm, None, out);
        }
    }

    fn tick(&mut self, now: Timestamp, start: Timestamp, st: &Settings, out: &mut Vec<Event>) {
        if let Spec::Comms { when_silent: true } = self.def.spec {
            if !self.active && self.pending_on.is_none() {
                // Silent since the last sample (or since the engine started).
                self.pending_on = Some(self.last_seen.unwrap_or(start));
            }
        }
        self.advance(now, st, out);
    }

    /// Fires every timer due up to `now`, earliest first, at its exact time.
    fn advance(&mut self, now: Timestamp, st: &Settings, out: &mut Vec<Event>) {
        loop {
            let on = self.pending_on.map(|t| t.saturating_add(self.def.on_delay));
            let off = self.pending_off.map(|t| t.saturating_add(self.def.off_delay));
            let shelf = self.shelf.as_ref().map(|s| s.until);
            let quiet =
                if self.chattering { self.last_activation.map(|t| t.saturating_add(st.chatter_quiet)) } else { None };
            let Some(due) = [on, off, shelf, quiet].into_iter().flatten().filter(|t| *t <= now).min() else { break };
            let t = due.max(self.clock);
            self.clock = t;
            if on == Some(due) {
                self.pending_on = None;
                self.activate(t, st, out);
            } else if off == Some(due) {
                self.pending_off = None;
                self.clear(t, out);
            } else if shelf == Some(due) {
                self.unshelve(t, "shelve_expired", None, out);
            } else {
                self.end_chattering(t, out);
            }
        }
        self.clock = self.clock.max(now);
    }

    fn activate(&mut self, t: Timestamp, st: &Settings, out: &mut Vec<Event>) {
        self.active = true;
        self.activations.push_back(t);
        while self.activations.front().is_some_and(|a| *a <= t - st.chatter_window) {
            self.activations.pop_front();
        }
        self.last_activation = Some(t);
        if self.shelf.is_some() || self.chattering {
            self.suppressed += 1;
            return;
        }
        self.transition(t, AlarmState::Unacknowledged, "activated", EventKind::Alarm, None, out);
        if st.chatter_activations >= 2 && self.activations.len() >= st.chatter_activations {
            self.chattering = true;
            self.suppressed = 0;
            let n = self.activations.len();
            let mut ev = self.event(t, EventKind::Alarm, "chattering", self.state, self.state, None);
            ev.message = format!(
                "{} is chattering: {n} activations within {} s",
                self.def.id,
                st.chatter_window / 1_000_000_000
            );
            ev.details["activations"] = json!(n);
            out.push(ev);
        }
    }

    fn clear(&mut self, t: Timestamp, out: &mut Vec<Event>) {
        self.active = false;
        if self.shelf.is_some() || self.chattering {
            return;
        }
        let after = match self.state {
            AlarmState::Unacknowledged => AlarmState::ReturnedUnacknowledged,
            AlarmState::Acknowledged => AlarmState::Normal,
            s => s,
        };
        self.transition(t, after, "returned_to_normal", EventKind::Alarm, None, out);
    }

    fn unshelve(&mut self, t: Timestamp, why: &str, by: Option<(&str, &str)>, out: &mut Vec<Event>) {
        self.shelf = None;
        let after = if self.active { AlarmState::Unacknowledged } else { AlarmState::Normal };
        self.transition(t, after, why, EventKind::Alarm, by, out);
        self.suppressed = 0;
    }

    fn end_chattering(&mut self, t: Timestamp, out: &mut Vec<Event>) {
        self.chattering = false;
        let held = self.suppressed;
        let after = match (self.active, self.state) {
            (true, AlarmState::Normal | AlarmState::ReturnedUnacknowledged) => AlarmState::Unacknowledged,
            (false, AlarmState::Unacknowledged) => AlarmState::ReturnedUnacknowledged,
            (false, AlarmState::Acknowledged) => AlarmState::Normal,
            (_, s) => s,
        };
        let before = self.state;
        self.state = after;
        if after != before {
            self.since = Some(t);
        }
        let mut ev = self.event(t, EventKind::Alarm, "chattering_ended", before, after, None);
        ev.message = format!("{} no longer chattering ({held} activations held back)", self.def.id);
        ev.details["suppressed"] = json!(held);
        out.push(ev);
        self.suppressed = 0;
    }

    /// Moves to `after` and records the event (also when the state stays, e.g. a
    /// re-annunciated fault code).
    fn transition(
        &mut self,
        t: Timestamp,
        after: AlarmState,
        what: &str,
        kind: EventKind,
        by: Option<(&str, &str)>,
        out: &mut Vec<Event>,
    ) {
        let before = self.state;
        self.state = after;
        self.since = Some(t);
        out.push(self.event(t, kind, what, before, after, by));
    }

    fn event(
        &self,
        t: Timestamp,
        kind: EventKind,
        what: &str,
        before: AlarmState,
        after: AlarmState,
        by: Option<(&str, &str)>,
    ) -> Event {
        let d = &self.def;
        let annunciates = matches!(what, "activated" | "code_changed" | "chattering")
            || (after == AlarmState::Unacknowledged && before != AlarmState::Unacknowledged);
        let severity = if annunciates { d.priority.severity() } else { 0 };
        let message = match (what, by) {
            ("activated" | "code_changed", _) => format!("{} (alarm, {})", self.describe(), d.priority),
            ("returned_to_normal", _) => format!("{} {} returned to normal", d.tag, d.condition.label()),
            ("acknowledged", Some((u, c))) if !c.is_empty() => format!("{} acknowledged by {u}: {c}", d.id),
            ("acknowledged", Some((u, _))) => format!("{} acknowledged by {u}", d.id),
            ("shelved", Some((u, c))) => format!(
                "{} shelved by {u} for {} min{}",
                d.id,
                self.shelf.as_ref().map(|s| (s.until - s.since) / 60_000_000_000).unwrap_or(0),
                if c.is_empty() { String::new() } else { format!(": {c}") }
            ),
            ("unshelved", Some((u, _))) => format!("{} unshelved by {u}", d.id),
            ("shelve_expired", _) => format!("{} shelving expired", d.id),
            (w, _) => format!("{} {w}", d.id),
        };
        let (user, comment) = match by {
            Some((u, c)) => (Some(u), Some(c)),
            None => (None, None),
        };
        let mut details = json!({
            "alarm_id": d.id,
            "tag": d.tag,
            "condition": d.condition.as_str(),
            "priority": d.priority.as_str(),
            "transition": what,
            "state_before": before.as_str(),
            "state_after": after.as_str(),
            "active": self.active,
            "value": self.value,
            "unit": d.unit,
            "user": user,
            "comment": comment,
        });
        match &d.spec {
            Spec::Limit { limit, deadband } => {
                details["limit"] = json!(limit);
                details["deadband"] = json!(deadband);
            }
            Spec::Rate { max_per_min, .. } => {
                details["limit"] = json!(max_per_min);
                details["rate_per_min"] = json!(self.rate);
            }
            Spec::Flat { tolerance } => {
                details["after_s"] = json!(d.on_delay as f64 / 1e9);
                details["tolerance"] = json!(tolerance);
                details["stuck_since"] = json!(self.flat_ref.map(|r| r.0));
            }
            Spec::Comms { .. } => {
                details["quality"] = json!(self.last_quality.to_string());
                details["last_seen"] = json!(self.last_seen);
            }
            Spec::Fault { cfg } => {
                details["code"] = json!(self.code);
                details["code_text"] = json!(cfg.text(self.code));
            }
        }
        if let Some(s) = &self.shelf {
            details["shelved_until"] = json!(s.until);
        }
        if d.on_delay > 0 {
            details["on_delay_s"] = json!(d.on_delay as f64 / 1e9);
        }
        if d.off_delay > 0 {
            details["off_delay_s"] = json!(d.off_delay as f64 / 1e9);
        }
        Event { id: 0, ts: t, asset: Some(d.asset.clone()), kind, severity, message, details }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Value;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_800_000_000 * S;

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
[site]
name = "Test"

[[area]]
id = "a"
name = "A"

[[line]]
id = "l1"
name = "L1"
area = "a"

[[asset]]
id = "filler"
name = "Filler"
line = "l1"
kind = "filler"

[[asset]]
id = "capper"
name = "Capper"
line = "l1"
kind = "capper"
{extra}
"#
        );
        match Config::from_str_named(&text, "t.toml") {
            Ok(c) => c,
            Err(e) => panic!("config:\n{e}"),
        }
    }

    /// An engine over `config`, the tag at index i on series i.
    fn engine(c: &Config) -> AlarmEngine {
        let names: Vec<String> = c.tags.iter().map(|t| t.name.clone()).collect();
        AlarmEngine::new(c, |n| names.iter().position(|x| x == n).map(|i| SeriesId(i as u32)))
    }

    fn f(series: u32, t: i64, v: f64) -> Sample {
        Sample { series: SeriesId(series), ts: T0 + t, value: Value::F64(v), quality: Quality::GOOD }
    }

    fn i(series: u32, t: i64, v: i64) -> Sample {
        Sample { series: SeriesId(series), ts: T0 + t, value: Value::I64(v), quality: Quality::GOOD }
    }

    fn transitions(evs: &[Event]) -> Vec<(i64, String, String)> {
        evs.iter()
            .map(|e| {
                (
                    (e.ts - T0) / (S / 1000),
                    e.details["alarm_id"].as_str().unwrap_or("").to_string(),
                    e.details["transition"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn tag(name: &str, asset: &str, kind: &str, alarm_keys: &str) -> String {
        format!(
            "\n[[tag]]\nname = \"{name}\"\nasset = \"{asset}\"\ndescription = \"x\"\nunit = \"bar\"\nvalue_type = \"{kind}\"\n{alarm_keys}\n"
        )
    }

    /// Feeds samples and ticks every 100 ms between them; all events in order.
    fn run(e: &mut AlarmEngine, samples: &[Sample], until: i64) -> Vec<Event> {
        let mut out = Vec::new();
        let mut k = 0;
        let mut t = samples.first().map(|s| s.ts).unwrap_or(T0);
        while t <= T0 + until {
            while k < samples.len() && samples[k].ts <= t {
                out.extend(e.on_sample(&samples[k]));
                k += 1;
            }
            out.extend(e.tick(t));
            t += S / 10;
        }
        out
    }

    #[test]
    fn high_limit_honours_deadband_and_both_delays_exactly() {
        let c = config(&tag(
            "filler.p",
            "filler",
            "f64",
            r#"limits = { h = 10.0, deadband = 1.0, on_delay = "5s", off_delay = "3s" }"#,
        ));
        let mut e = engine(&c);
        assert_eq!(e.len(), 1);
        // Over the limit for 3 s only: no alarm.
        let mut s = vec![f(0, 0, 9.0), f(0, S, 10.5), f(0, 4 * S, 9.5)];
        // Over from 10.3 s; still over (in the deadband) at 12 s: raised at 15.3 s.
        s.extend([f(0, 10_300_000_000, 11.0), f(0, 12 * S, 10.2)]);
        // In the deadband (9.5 > 10 - 1): nothing; below 9.0 from 20 s; back over at 22 s
        // (within the off-delay): stays; below from 24.5 s: clears at 27.5 s.
        s.extend([f(0, 18 * S, 9.5), f(0, 20 * S, 8.9), f(0, 22 * S, 9.2), f(0, 24_500_000_000, 8.0)]);
        let evs = run(&mut e, &s, 40 * S);
        assert_eq!(
            transitions(&evs),
            vec![
                (15_300, "filler.p:h".to_string(), "activated".to_string()),
                (27_500, "filler.p:h".to_string(), "returned_to_normal".to_string()),
            ]
        );
        assert_eq!(evs[0].kind, EventKind::Alarm);
        assert_eq!(evs[0].details["limit"], json!(10.0));
        assert_eq!(evs[0].details["state_before"], "normal");
        assert_eq!(evs[0].details["state_after"], "unacknowledged");
        assert_eq!(evs[0].severity, Priority::Medium.severity());
        assert_eq!(evs[1].details["state_after"], "returned_unacknowledged");
    }

    #[test]
    fn delays_fire_at_their_time_even_when_learnt_later() {
        let c = config(&tag("filler.p", "filler", "f64", r#"limits = { l = 2.0, on_delay = "10s" }"#));
        let mut e = engine(&c);
        assert!(e.on_sample(&f(0, 0, 1.0)).is_empty());
        // No tick for a minute; the next sample (still low) brings the alarm, dated 10 s.
        let evs = e.on_sample(&f(0, 60 * S, 1.5));
        assert_eq!(transitions(&evs), vec![(10_000, "filler.p:l".to_string(), "activated".to_string())]);
    }

    #[test]
    fn isa_states_and_acknowledgement() {
        let c = config(&tag("filler.p", "filler", "f64", "limits = { hh = 5.0, h = 4.0 }"));
        let mut e = engine(&c);
        assert_eq!(e.len(), 2);
        e.on_sample(&f(0, 0, 4.5));
        assert_eq!(e.status("filler.p:h").map(|s| s.state), Some(AlarmState::Unacknowledged));
        assert_eq!(e.status("filler.p:hh").map(|s| s.state), Some(AlarmState::Normal));
        assert_eq!(
            e.acknowledge("filler.p:hh", "ann", "", T0 + S),
            Err(AlarmError::NothingToAcknowledge { id: "filler.p:hh".into(), state: "normal" })
        );
        let ack = e.acknowledge("filler.p:h", "ann", "valve checked", T0 + 2 * S).expect("ack");
        assert_eq!(ack.len(), 1);
        assert_eq!(ack[0].kind, EventKind::Acknowledgement);
        assert_eq!(ack[0].details["user"], "ann");
        assert_eq!(ack[0].details["comment"], "valve checked");
        assert_eq!(ack[0].details["state_after"], "acknowledged");
        // Acknowledged, then back to normal: Normal directly.
        let evs = e.on_sample(&f(0, 3 * S, 3.0));
        assert_eq!(evs[0].details["state_after"], "normal");
        // Active again, back to normal unacknowledged, active again (re-annunciated),
        // back, and acknowledged from Returned-unacknowledged to Normal.
        e.on_sample(&f(0, 4 * S, 4.2));
        let rtn = e.on_sample(&f(0, 5 * S, 3.0));
        assert_eq!(rtn[0].details["state_after"], "returned_unacknowledged");
        let again = e.on_sample(&f(0, 6 * S, 4.2));
        assert_eq!(again[0].details["state_before"], "returned_unacknowledged");
        assert_eq!(again[0].details["state_after"], "unacknowledged");
        e.on_sample(&f(0, 7 * S, 3.0));
        let ack = e.acknowledge("filler.p:h", "bo", "", T0 + 8 * S).expect("ack");
        assert_eq!(ack[0].details["state_after"], "normal");
        assert!(e.snapshot().is_empty());
        assert_eq!(e.acknowledge("nope:h", "bo", "", T0), Err(AlarmError::Unknown("nope:h".into())));
    }

    #[test]
    fn rate_of_change_over_its_window() {
        let c = config(&tag(
            "filler.p",
            "filler",
            "f64",
            r#"rate_of_change = { max_per_min = 1.0, window = "60s", direction = "rise" }"#,
        ));
        let mut e = engine(&c);
        // Flat for 2 min, then rising 2/min for 2 min, then flat.
        let mut s = Vec::new();
        for k in 0..=400 {
            let t = k as f64;
            let v = if t < 120.0 {
                5.0
            } else if t < 240.0 {
                5.0 + (t - 120.0) / 30.0
            } else {
                9.0
            };
            s.push(f(0, k * S, v));
        }
        let evs = run(&mut e, &s, 400 * S);
        let tr = transitions(&evs);
        assert_eq!(tr.len(), 2, "{tr:?}");
        // Over the last 60 s the rise passes 1/min once 30 s of the ramp are in the window.
        assert_eq!(tr[0].2, "activated");
        assert!((150_000..=152_000).contains(&tr[0].0), "{tr:?}");
        assert_eq!(tr[1].2, "returned_to_normal");
        assert!((269_000..=271_000).contains(&tr[1].0), "{tr:?}");
        let rate = evs[0].details["rate_per_min"].as_f64().unwrap_or(0.0);
        assert!(rate > 1.0 && rate < 1.1, "{rate}");
        // A fall is not watched.
        let falls: Vec<Sample> = (0..200).map(|k| f(0, (500 + k) * S, 9.0 - k as f64 / 10.0)).collect();
        assert!(run(&mut e, &falls, 700 * S).is_empty());
    }

    #[test]
    fn flatline_after_the_value_stood_still() {
        let c = config(&tag("filler.t", "filler", "f64", r#"flatline = { after = "3m", tolerance = 0.001 }"#));
        let mut e = engine(&c);
        let mut s: Vec<Sample> = (0..12).map(|k| f(0, k * 5 * S, 12.0 + (k % 3) as f64 * 0.01)).collect();
        // Stuck at 12.02 from 60 s (it was already 12.02 at 55 s) for 5 min.
        s.extend((12..72).map(|k| f(0, k * 5 * S, 12.02)));
        s.push(f(0, 360 * S, 12.05));
        let evs = run(&mut e, &s, 400 * S);
        assert_eq!(
            transitions(&evs),
            vec![
                (55_000 + 180_000, "filler.t:flatline".to_string(), "activated".to_string()),
                (360_000, "filler.t:flatline".to_string(), "returned_to_normal".to_string()),
            ]
        );
        assert_eq!(evs[0].severity, Priority::Low.severity());
        assert_eq!(evs[0].details["stuck_since"], json!(T0 + 55 * S));
    }

    #[test]
    fn comms_loss_from_bad_quality_and_from_silence() {
        let mut text = tag("filler.p", "filler", "f64", r#"comms_loss = { after = "10s" }"#);
        text += &tag("capper.v", "capper", "f64", r#"comms_loss = { after = "30s", when_silent = true }"#);
        let c = config(&text);
        let mut e = engine(&c);
        let bad =
            |t: i64| Sample { series: SeriesId(0), ts: T0 + t, value: Value::F64(0.0), quality: Quality::BAD_COMMS };
        let mut s = vec![f(0, 0, 1.0), f(1, 0, 1.0), bad(5 * S), bad(6 * S), f(0, 8 * S, 1.0)];
        // Bad from 20 s on (first bad sample), good again at 45 s.
        s.extend((20..45).map(|k| bad(k * S)));
        s.push(f(0, 45 * S, 1.0));
        // capper.v: samples every second to 10 s, then silent until 100 s.
        s.extend((1..=10).map(|k| f(1, k * S, 1.0)));
        s.push(f(1, 100 * S, 1.0));
        s.sort_by_key(|x| x.ts);
        let evs = run(&mut e, &s, 120 * S);
        assert_eq!(
            transitions(&evs),
            vec![
                (30_000, "filler.p:comms_loss".to_string(), "activated".to_string()),
                (40_000, "capper.v:comms_loss".to_string(), "activated".to_string()),
                (45_000, "filler.p:comms_loss".to_string(), "returned_to_normal".to_string()),
                (100_000, "capper.v:comms_loss".to_string(), "returned_to_normal".to_string()),
            ]
        );
        assert_eq!(evs[0].details["quality"], "bad:0x80050000");
    }

    #[test]
    fn fault_code_alarm_names_the_code() {
        let c = config(&tag(
            "capper.fault_code",
            "capper",
            "i64",
            r#"fault_code = { codes = { "101" = "jam", "201" = "bearing failure" } }"#,
        ));
        let mut e = engine(&c);
        assert!(e.on_sample(&i(0, 0, 0)).is_empty());
        let on = e.on_sample(&i(0, S, 101));
        assert_eq!(on.len(), 1);
        assert_eq!(on[0].message, "capper.fault_code fault 101 (jam) (alarm, high)");
        assert_eq!(on[0].details["code"], 101);
        assert_eq!(on[0].severity, 750);
        e.acknowledge("capper.fault_code:fault_code", "ann", "", T0 + 2 * S).expect("ack");
        // A new code while it stands is annunciated again.
        let changed = e.on_sample(&i(0, 3 * S, 201));
        assert_eq!(transitions(&changed), vec![(3000, "capper.fault_code:fault_code".into(), "code_changed".into())]);
        assert_eq!(changed[0].details["state_after"], "unacknowledged");
        assert_eq!(changed[0].details["code_text"], "bearing failure");
        assert!(e.on_sample(&i(0, 4 * S, 201)).is_empty());
        let off = e.on_sample(&i(0, 5 * S, 0));
        assert_eq!(off[0].details["transition"], "returned_to_normal");
        assert_eq!(e.snapshot().len(), 1, "returned unacknowledged stays listed");
    }

    #[test]
    fn chattering_is_marked_counted_and_ends_after_quiet() {
        let extra = "\n[alarms]\nchattering = { activations = 3, window = \"10m\", quiet = \"5m\" }\n".to_string()
            + &tag("filler.p", "filler", "f64", "limits = { h = 10.0 }");
        let c = config(&extra);
        let mut e = engine(&c);
        // Toggles every 30 s for 10 min: 10 activations, the last clear at 600 s.
        let s: Vec<Sample> = (0..21).map(|k| f(0, k * 30 * S, if k % 2 == 1 { 11.0 } else { 9.0 })).collect();
        let evs = run(&mut e, &s, 1000 * S);
        let tr: Vec<(i64, String)> = transitions(&evs).into_iter().map(|(t, _, w)| (t, w)).collect();
        assert_eq!(
            tr,
            vec![
                (30_000, "activated".to_string()),
                (60_000, "returned_to_normal".to_string()),
                (90_000, "activated".to_string()),
                (120_000, "returned_to_normal".to_string()),
                (150_000, "activated".to_string()),
                (150_000, "chattering".to_string()),
                // 7 more activations (210 s .. 570 s) held back; quiet 5 min after the last.
                (570_000 + 300_000, "chattering_ended".to_string()),
            ]
        );
        let end = &evs[6];
        assert_eq!(end.details["suppressed"], 7);
        // Unacknowledged while chattering, condition now normal: returned unacknowledged.
        assert_eq!(end.details["state_before"], "unacknowledged");
        assert_eq!(end.details["state_after"], "returned_unacknowledged");
    }

    #[test]
    fn shelving_hides_the_alarm_until_it_expires() {
        let c = config(&tag("filler.p", "filler", "f64", "limits = { h = 10.0 }"));
        let mut e = engine(&c);
        let id = "filler.p:h";
        e.on_sample(&f(0, 0, 11.0));
        assert_eq!(
            e.shelve(id, "ann", T0 + 9 * 3600 * S, "", T0 + S),
            Err(AlarmError::BadShelveTime { id: id.into(), asked_s: 9 * 3600 - 1, max_s: 8 * 3600 })
        );
        let sh = e.shelve(id, "ann", T0 + 600 * S, "sensor being replaced", T0 + S).expect("shelve");
        assert_eq!(sh[0].details["state_after"], "shelved");
        assert_eq!(sh[0].details["user"], "ann");
        assert_eq!(sh[0].details["shelved_until"], json!(T0 + 600 * S));
        assert_eq!(e.snapshot()[0].state, AlarmState::Shelved);
        // Condition changes while shelved: no events.
        let s = vec![f(0, 10 * S, 9.0), f(0, 20 * S, 11.0), f(0, 30 * S, 9.0), f(0, 40 * S, 11.0)];
        let quiet = run(&mut e, &s, 599 * S);
        assert!(quiet.is_empty(), "{:?}", transitions(&quiet));
        assert_eq!(e.status(id).map(|s| s.suppressed), Some(2));
        // Expires at 600 s exactly, condition active: unacknowledged again.
        let exp = e.tick(T0 + 601 * S);
        assert_eq!(transitions(&exp), vec![(600_000, id.to_string(), "shelve_expired".to_string())]);
        assert_eq!(exp[0].details["state_after"], "unacknowledged");
        assert_eq!(exp[0].severity, Priority::Medium.severity());
        // Shelve and unshelve by hand, condition normal by then.
        e.on_sample(&f(0, 610 * S, 9.0));
        e.shelve(id, "ann", T0 + 3600 * S, "", T0 + 620 * S).expect("shelve");
        let un = e.unshelve(id, "bo", T0 + 630 * S).expect("unshelve");
        assert_eq!(un[0].details["state_after"], "normal");
        assert_eq!(e.unshelve(id, "bo", T0 + 640 * S), Err(AlarmError::NotShelved(id.into())));
    }

    #[test]
    fn templates_by_pattern_and_kind_with_tag_overrides() {
        let mut text = String::from(
            r#"
[[alarm_template]]
match = "*.vib_*_rms"
limits = { h = 2.8, hh = 4.5, deadband = 0.1, on_delay = "30s" }

[[alarm_template]]
asset_kind = "capper"
comms_loss = { after = "20s" }
"#,
        );
        text += &tag("capper.vib_de_rms", "capper", "f64", "limits = { h = 3.0 }");
        text += &tag("filler.vib_de_rms", "filler", "f64", "");
        text += &tag("capper.state", "capper", "string", "");
        let c = config(&text);
        let e = engine(&c);
        let ids: Vec<&str> = e.ids().collect();
        assert_eq!(
            ids,
            [
                "capper.vib_de_rms:hh",
                "capper.vib_de_rms:h",
                "capper.vib_de_rms:comms_loss",
                "filler.vib_de_rms:hh",
                "filler.vib_de_rms:h",
                "capper.state:comms_loss",
            ]
        );
        assert_eq!(e.status("capper.vib_de_rms:h").and_then(|s| s.limit), Some(3.0));
        assert_eq!(e.status("filler.vib_de_rms:h").and_then(|s| s.limit), Some(2.8));
        let merged = c.tag_alarms(&c.tags[0]);
        let l = merged.limits.expect("limits");
        assert_eq!((l.deadband, l.on_delay.map(|d| d.0.as_secs())), (Some(0.1), Some(30)));
    }

    #[test]
    fn bad_alarm_config_is_reported_with_line_and_key() {
        let base = "[site]\nname = \"T\"\n[[area]]\nid = \"a\"\nname = \"A\"\n[[line]]\nid = \"l1\"\nname = \"L\"\narea = \"a\"\n[[asset]]\nid = \"f\"\nname = \"F\"\nline = \"l1\"\nkind = \"filler\"\n";
        let text = format!(
            "{base}[[tag]]\nname = \"f.p\"\nasset = \"f\"\ndescription = \"x\"\nrate_of_change = {{ window = \"1m\" }}\nfault_code = {{}}\n\
             [[alarm_template]]\nmatch = \"*.nothing\"\nflatline = {{ after = \"0s\" }}\n\
             [[alarm_template]]\nasset_kind = \"fillr\"\n\
             [[alarm_template]]\nlimits = {{ h = 1.0 }}\n"
        );
        let err = Config::from_str_named(&text, "bad.toml").expect_err("must fail");
        let lines: Vec<String> = err.diagnostics().iter().map(|d| d.to_string()).collect();
        let want = [
            "bad.toml:19:18: tag[0].rate_of_change.max_per_min: a rate-of-change alarm needs max_per_min",
            "bad.toml:20:14: tag[0].fault_code: fault_code applies to i64 and bool tags, not f64; set value_type = \"i64\"",
            "bad.toml:22:9: alarm_template[0].match: this template matches no [[tag]]",
            "bad.toml:23:22: alarm_template[0].flatline.after: after must be more than 0",
            "bad.toml:25:14: alarm_template[1].asset_kind: no [[asset]] has kind `fillr`; did you mean `filler`?",
            "bad.toml:26:1: alarm_template[2]: a template needs `match` (a tag-name pattern) or `asset_kind`, or both",
        ];
        assert_eq!(lines.len(), want.len(), "{}", lines.join("\n"));
        for w in want {
            assert!(lines.iter().any(|l| l == w), "missing\n  {w}\nin\n  {}", lines.join("\n  "));
        }
    }
}
